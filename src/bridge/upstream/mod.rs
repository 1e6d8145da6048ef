//! The upstream connection: fieldgate's own MQTT client (3.1.1 or 5, one
//! code path on rumqttc's MQTT 5 packet types, written as 3.1.1 when
//! asked), the session it resumes, reconnects after a backoff with full
//! jitter, the options from `uplink:`, the broker's CONNACK limits and the
//! forwarder's request queue.
//!
//! Protocol seam: everything here speaks MQTT 5 packets; `wire.rs`
//! writes and reads them as 3.1.1 when `uplink.protocol` is 3.1.1, so
//! neither this file nor the forwarder branches on the version. What
//! the broker allows (its CONNACK: receive maximum, maximum packet size
//! and QoS, retain, wildcard and shared subscriptions, topic aliases) is
//! `server.rs`, handed to the forwarder with [`Report::Up`]; a PUBACK or
//! PUBREC with a reason code of 0x80 or more is [`Report::Refused`].
//!
//! Owns the connection ([`Link`]). Must not touch the outbox: the
//! forwarder (`forward/`) polls [`next`], chooses every packet id and
//! keeps the rows' state.
//!
//! Packet ids (see docs/design.md, "Packet ids"): an outbox row's packet
//! id is a function of its row id ([`row_pkid`]), so it is stored with the
//! row at no cost and is the same in every life of the process; messages
//! not from the outbox (`online`, live sends) use [`OTHER_PKIDS`] at QoS 1
//! at most, SUBSCRIBE the last ids. A QoS 2 row's PUBREL is sent only when
//! the forwarder asks for it, after the row is marked released in the
//! outbox: so after a crash a row is either sent again as the same PUBLISH
//! (the broker still holds that packet id: a duplicate it drops) or
//! released again (PUBREL: the broker completes it, or answers PUBCOMP
//! for an id it already freed). Never a second delivery, never a new
//! message taken for an old one.
//!
//! Session: the client id is fixed and every connection resumes the
//! session (`clean_session = false`, from the first connection of a
//! process): commands queued upstream while the gateway was down arrive,
//! and a resumed session sends every unacknowledged PUBLISH again (DUP)
//! and every PUBREL, in row order (MQTT-4.4.0-1). A PUBREL from the broker
//! is always answered with PUBCOMP (MQTT-4.3.3-2), known id or not.
//!
//! A packet from upstream larger than `uplink.max_packet_size` (a command
//! too big to take) breaks the connection, and the broker would send it
//! again on every reconnect of the lasting session, for ever. So after such
//! a drop one connection is made clean and closed at once ([`Start::Wipe`]:
//! the broker forgets that message and any other queued for the gateway;
//! the rows in flight are sent again from the outbox); the message is
//! counted in `commands_dropped` and logged.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Packet, Publish};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::bridge::config::ReconnectPolicy;

mod backoff;
mod client;
mod conn;
mod live;
mod options;
mod outgoing;
mod server;
mod wire;
use backoff::{Backoff, Failure};
pub use client::{Client, Outgoing, Request, Upstream};
use conn::{Conn, ConnError};
use live::Turn;
pub use options::{Options, SYSTEM_CA_BUNDLE, UpstreamError, options, tls_client_config};
use outgoing::Held;
pub use server::{Limits, Refusal};
pub use wire::{Protocol, publish_size};

/// Packet ids of outbox rows: `1..=ROW_PKIDS` ([`row_pkid`]).
pub const ROW_PKIDS: u16 = 64_511;
/// Packet ids of messages not from the outbox, chosen by the forwarder.
pub const OTHER_PKIDS: RangeInclusive<u16> = 64_512..=65_471;
/// Packet ids of SUBSCRIBE packets, chosen here.
const SUBSCRIBE_PKIDS: RangeInclusive<u16> = 65_472..=65_535;
/// Requests taken before a write, at most.
const REQUESTS_PER_WRITE: usize = 256;

/// The packet id of outbox row `id`: the same in every life of the process.
pub fn row_pkid(id: i64) -> u16 {
    ((id - 1).rem_euclid(i64::from(ROW_PKIDS)) + 1) as u16
}

/// What the connection reports to the forwarder.
#[derive(Debug)]
pub enum Report {
    /// Connected (the CONNACK of a session the forwarder may use), with
    /// what the broker allows on this connection.
    Up {
        session_present: bool,
        limits: Limits,
    },
    /// The connection failed or dropped; a reconnect follows after a backoff.
    Down,
    /// PUBACK: a QoS 1 message is done.
    Acked(u16),
    /// PUBREC: the broker has a QoS 2 message; its PUBREL waits for
    /// [`Upstream::release`].
    Received(u16),
    /// PUBCOMP: a QoS 2 message is done.
    Completed(u16),
    /// PUBACK or PUBREC with a reason code ≥ 0x80 (MQTT 5): the broker
    /// refused that message; it is out of the session.
    Refused { pkid: u16, refusal: Refusal },
    /// A publish from upstream (a command; boxed: the other reports are
    /// a few bytes).
    Command(Box<Publish>),
}

/// How the next connection starts (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Clean, and closed at once: the broker forgets the session.
    Wipe,
    /// Resumes the session.
    Lasting,
}

/// Where the connection stands.
enum State {
    /// Not connected; the next try waits until `retry_at`.
    Down {
        retry_at: Option<Instant>,
    },
    Up {
        conn: Conn,
    },
    /// Our DISCONNECT is sent: acknowledgements on their way are still
    /// read until the broker closes the connection.
    Closing {
        conn: Conn,
    },
}

/// The keep-alive (MQTT-3.1.2-23): a PINGREQ when nothing was written for
/// the interval; no PINGRESP within another interval drops the connection.
#[derive(Debug, Clone, Copy)]
enum Ping {
    Idle { since: Instant },
    Waiting { since: Instant },
}

/// The upstream connection and its session. Polled by the forwarder
/// through [`next`], so events reach the drain state machine without a
/// task hop.
pub struct Link {
    opts: Options,
    requests: mpsc::Receiver<Request>,
    state: State,
    ping: Ping,
    start: Start,
    held: Held,
    next_subscribe: u16,
    backoff: Backoff,
    /// The last refusal logged (a refused CONNACK is logged once per change).
    refused: Option<rumqttc::v5::mqttbytes::v5::ConnectReturnCode>,
    counters: Arc<super::Counters>,
}

impl Link {
    pub fn new(
        opts: Options,
        requests: mpsc::Receiver<Request>,
        reconnect: ReconnectPolicy,
        counters: Arc<super::Counters>,
    ) -> Link {
        Link {
            opts,
            requests,
            state: State::Down { retry_at: None },
            ping: Ping::Idle {
                since: Instant::now(),
            },
            start: Start::Lasting,
            held: Held::default(),
            next_subscribe: *SUBSCRIBE_PKIDS.start(),
            backoff: Backoff::new(reconnect),
            refused: None,
            counters,
        }
    }
}

/// What the forwarder does to the session beside its requests.
pub trait Resend {
    /// Takes the QoS 1/2 publish with packet id `pkid` out of the session,
    /// so a message given up on is not sent again; `true` when it was there.
    fn forget_publish(&mut self, pkid: u16) -> bool;
}

impl Resend for Link {
    fn forget_publish(&mut self, pkid: u16) -> bool {
        self.held.forget(pkid)
    }
}

/// The next report of `link`, handing the link back (boxed: the future
/// is made anew for every event, and moves only the box). The forwarder
/// keeps this future across its `select!` loop (it is never cancelled
/// midway: a connect in progress must not restart because a message
/// arrived).
pub async fn next(mut link: Box<Link>) -> (Box<Link>, Report) {
    let r = link.step().await;
    (link, r)
}

impl Link {
    async fn step(&mut self) -> Report {
        loop {
            match std::mem::replace(&mut self.state, State::Down { retry_at: None }) {
                State::Down { retry_at } => {
                    self.wait_down(retry_at).await;
                    match self.connect().await {
                        Ok(Some(r)) => return r,
                        Ok(None) => {}
                        Err(e) => return self.failed(e),
                    }
                }
                State::Up { mut conn } => match self.turn(&mut conn).await {
                    Ok(Turn::Report(r)) => {
                        self.state = State::Up { conn };
                        return r;
                    }
                    Ok(Turn::Again) => self.state = State::Up { conn },
                    Ok(Turn::Closing) => self.state = State::Closing { conn },
                    Err(e) => return self.failed(e),
                },
                State::Closing { mut conn } => {
                    if conn.has_output() && conn.flush().await.is_err() {
                        return Report::Down;
                    }
                    let r = match conn.next_packet() {
                        Ok(Some(p)) => self.incoming(&mut conn, p),
                        Ok(None) => conn.fill().await.map(|()| None),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(r) => {
                            self.state = State::Closing { conn };
                            if let Some(r) = r {
                                return r;
                            }
                        }
                        Err(_) => return Report::Down,
                    }
                }
            }
        }
    }

    /// Until `retry_at`, taking requests meanwhile.
    async fn wait_down(&mut self, retry_at: Option<Instant>) {
        self.take_requests();
        let Some(at) = retry_at else { return };
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => return,
                Some(r) = self.requests.recv() => self.request_down(r),
            }
        }
    }

    /// Connects; `Ok(None)` after a session wipe (the next connection
    /// follows at once).
    async fn connect(&mut self) -> Result<Option<Report>, ConnError> {
        let wipe = self.start == Start::Wipe;
        let (mut conn, accepted) = Conn::open(&self.opts, wipe).await?;
        let present = accepted.session_present;
        self.backoff.connected(Instant::now());
        if self.refused.take().is_some() {
            info!("uplink: the broker accepts the connection again");
        }
        self.ping = Ping::Idle {
            since: Instant::now(),
        };
        if wipe {
            info!("uplink connected; clearing the previous session");
            // closed either way; the next connection resumes nothing
            let _ = conn.queue(&disconnect());
            let _ = conn.flush().await;
            self.start = Start::Lasting;
            self.held.clear();
            return Ok(None);
        }
        if present {
            for p in self.held.resend() {
                if let Err(e) = conn.queue(&p) {
                    warn!(error = %e, "uplink: a message cannot be sent again");
                }
            }
        } else {
            self.held.clear();
        }
        info!(
            session_present = present,
            resent = self.held.len(),
            "uplink connected"
        );
        self.state = State::Up { conn };
        Ok(Some(Report::Up {
            session_present: present,
            limits: accepted.limits,
        }))
    }

    /// The connection failed: counts a command too large, logs, and waits
    /// a backoff before the next try.
    fn failed(&mut self, e: ConnError) -> Report {
        if let ConnError::TooLarge(size) = e {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(
                size,
                "uplink: a packet from upstream is over uplink.max_packet_size; \
                 dropped (counted in commands_dropped), and the next connection clears \
                 the session so the broker does not send it again"
            );
            self.start = Start::Wipe;
        }
        let why = match &e {
            ConnError::Refused(_) => Failure::Refused,
            _ => Failure::Lost,
        };
        let delay = self.backoff.failed(Instant::now(), why);
        match &e {
            // the same refusal again: said once, until it changes
            ConnError::Refused(code) if self.refused.as_ref() == Some(code) => {
                debug!(error = %e, retry_in = ?delay, "uplink connection refused again");
            }
            ConnError::Refused(code) => {
                self.refused = Some(*code);
                warn!(error = %e, retry_in = ?delay,
                    "uplink connection refused; trying again at the backoff's maximum \
                     (logged again when the answer changes)");
            }
            _ => warn!(error = %e, retry_in = ?delay, "uplink connection failed"),
        }
        self.take_requests();
        self.state = State::Down {
            retry_at: Some(Instant::now() + delay),
        };
        Report::Down
    }

    /// Requests made while no connection is up: publishes and releases
    /// join the session (sent when it resumes), the rest is dropped (the
    /// forwarder subscribes again at every connect; acknowledgements
    /// belong to the connection that dropped).
    fn take_requests(&mut self) {
        while let Ok(r) = self.requests.try_recv() {
            self.request_down(r);
        }
    }

    fn request_down(&mut self, r: Request) {
        match r {
            Request::Publish { publish, key } if publish.qos != QoS::AtMostOnce => {
                self.held.sent(publish, key);
            }
            Request::Release { pkid, key } => {
                self.held.release(pkid, key);
            }
            _ => {}
        }
    }
}

/// A normal DISCONNECT (the will is not sent).
fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
}
