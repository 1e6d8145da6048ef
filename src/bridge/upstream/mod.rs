//! The upstream connection (rumqttc): the event-loop driver with
//! exponential backoff and jitter, and how the session starts; the client
//! options from `uplink:` and the backoff are in `options.rs`.
//!
//! Owns the rumqttc `EventLoop` ([`Link`]). Must not touch the outbox: the
//! forwarder (`forward.rs`) polls [`next`] and keeps the state.
//!
//! Session handling: the client id is fixed and reconnects use
//! `clean_session = false`, so rumqttc resends unacknowledged QoS 1/2
//! publishes (and PUBRELs) with their packet ids after an outage and the
//! broker drops QoS 2 duplicates. The first connection of a process
//! resumes the session too ([`Session::Lasting`]: commands queued upstream
//! while the gateway was down are delivered) unless QoS 2 is in play: with
//! a `forward` entry at QoS 2 or a QoS 2 row in the outbox it is clean
//! ([`Session::Wipe`]: `clean_session = true`, then an immediate
//! DISCONNECT), because a restarted process no longer knows the packet ids
//! of its previous life, and a new QoS 2 message reusing a packet id the
//! broker still holds (PUBLISH received, PUBREL not yet) would be taken for
//! a duplicate and lost. QoS 1 leaves no such state at the broker: its
//! packet id is free once the broker has the message. The price of the
//! wipe: QoS 2 messages that were in flight when the process died are sent
//! again, and queued commands are lost (see the module doc of `bridge`).
//!
//! rumqttc forgets which incoming QoS 2 commands it PUBREC'd at every
//! drop, and fails on the PUBREL the broker of the lasting session sends
//! again (rumqttc issue 664: a reconnect at every try, for ever). After
//! such a failure the packet id is marked as received, so the next
//! connection takes the PUBREL and answers PUBCOMP (one extra reconnect).
//!
//! A packet from upstream larger than `uplink.max_packet_size` (a command
//! too big to take) breaks the connection, and the broker would send it
//! again on every reconnect of the lasting session, for ever. So after such
//! a drop the session is wiped again (the broker forgets that message and
//! any other queued for the gateway; the rows in flight are sent again from
//! the outbox); the message is counted in `commands_dropped` and logged.

use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::mqttbytes::Error as MqttError;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, NetworkOptions, Outgoing, QoS,
    Request, StateError,
};
use tracing::{info, warn};

use crate::config::ReconnectConfig;

mod options;
pub use options::{SYSTEM_CA_BUNDLE, UpstreamError, backoff, options};

/// What the connection reports to the forwarder.
#[derive(Debug)]
pub enum Report {
    /// Connected (the CONNACK of a session the forwarder may use).
    Up {
        session_present: bool,
    },
    /// The connection failed or dropped; a reconnect follows after a backoff.
    Down,
    Event(Event),
}

/// The upstream connection: the rumqttc event loop with reconnect backoff
/// and the session wipe. Polled by the forwarder through [`next`], so
/// events reach the drain state machine without a task hop.
pub struct Link {
    el: EventLoop,
    client: AsyncClient,
    reconnect: ReconnectConfig,
    attempt: u32,
    session: Session,
    retry_at: Option<tokio::time::Instant>,
    counters: std::sync::Arc<super::Counters>,
}

/// Where the upstream session stands (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The next connection is clean (`clean_session = true`) and is closed
    /// at once: the broker forgets the previous session.
    Wipe,
    /// The wipe's DISCONNECT is on its way; then the lasting session.
    Wiping,
    /// Connections resume the session (`clean_session = false`).
    Lasting,
}

impl Link {
    /// `client` is used for the DISCONNECT of the session wipe; `io_timeout`
    /// bounds each connect and each write (rumqttc's connection timeout).
    pub fn new(
        mut el: EventLoop,
        client: AsyncClient,
        reconnect: ReconnectConfig,
        io_timeout: Duration,
        counters: std::sync::Arc<super::Counters>,
        start: Session,
    ) -> Link {
        // the options come clean: a lasting start resumes at once
        if start == Session::Lasting {
            el.mqtt_options.set_clean_session(false);
        }
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(io_timeout.as_secs().max(1));
        el.set_network_options(net);
        Link {
            el,
            client,
            reconnect,
            attempt: 0,
            session: start,
            retry_at: None,
            counters,
        }
    }
}

impl Link {
    /// Makes rumqttc take a PUBREL for the incoming QoS 2 packet id `pkid`
    /// on the next connection. rumqttc forgets the incoming QoS 2 ids at
    /// every drop, but the broker of a lasting session sends the PUBREL of
    /// a command the gateway had PUBREC'd again (MQTT-4.4.0-1): rumqttc
    /// then fails with "unsolicited" and drops the connection, and the
    /// broker sends it again on the next one, for ever (rumqttc issue 664).
    /// Marking the id as received (the one public way: rumqttc's own
    /// handler for an incoming QoS 2 publish, acknowledged manually so
    /// nothing is sent; its event taken back) lets the PUBREL through and
    /// rumqttc answers PUBCOMP. An unsolicited PUBACK, PUBREC or PUBCOMP is
    /// not sent again, so marking its id changes nothing.
    fn expect_pubrel(&mut self, pkid: u16) {
        let mut p = rumqttc::Publish::new("", QoS::ExactlyOnce, Vec::new());
        p.pkid = pkid;
        if self
            .el
            .state
            .handle_incoming_packet(Incoming::Publish(p))
            .is_ok()
        {
            self.el.state.events.pop_back();
        }
        info!(
            pkid,
            "uplink: an acknowledgement for an unknown packet id dropped the connection; \
             a PUBREL with that id is taken on the next one"
        );
    }
}

/// The requests the forwarder makes of the upstream client: rumqttc's
/// `AsyncClient`, or a mock in the forwarder's unit tests. Each is queued
/// at once or refused (`false`): the forwarder polls the event loop itself,
/// so waiting for room would never end.
pub trait Upstream {
    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: bytes::Bytes) -> bool;
    fn subscribe(&self, filter: String, qos: QoS) -> bool;
    fn disconnect(&self) -> bool;
    /// Acknowledges an incoming QoS 1/2 publish (PUBACK, or PUBREC for
    /// QoS 2): acknowledgements are manual, so a command is acknowledged
    /// only once it was handed on.
    fn ack(&self, publish: &rumqttc::Publish) -> bool;
}

impl Upstream for AsyncClient {
    /// Moves the payload without a copy.
    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: bytes::Bytes) -> bool {
        matches!(
            super::poll_once(self.publish_bytes(topic, qos, retain, payload)),
            Some(Ok(()))
        )
    }

    fn subscribe(&self, filter: String, qos: QoS) -> bool {
        self.try_subscribe(filter, qos).is_ok()
    }

    fn disconnect(&self) -> bool {
        self.try_disconnect().is_ok()
    }

    fn ack(&self, publish: &rumqttc::Publish) -> bool {
        self.try_ack(publish).is_ok()
    }
}

/// rumqttc's queue of requests it replays after a reconnect.
pub trait Resend {
    /// Takes the QoS 1/2 publish with packet id `pkid` out; `true` when it
    /// was there.
    fn forget_publish(&mut self, pkid: u16) -> bool;
    /// Puts the queue in send order again: releases first, then the
    /// publishes with a packet id by `key(pkid)` (the outbox row id), then
    /// new requests as they came. rumqttc appends what was in flight
    /// behind what was still waiting when a connection drops during a
    /// replay, which would send newer rows before older ones.
    fn order(&mut self, key: &dyn Fn(u16) -> i64);
}

impl Resend for Link {
    fn order(&mut self, key: &dyn Fn(u16) -> i64) {
        let rank = |r: &Request| match r {
            Request::PubRel(_) => i64::MIN,
            Request::Publish(p) if p.pkid != 0 => key(p.pkid),
            _ => i64::MAX,
        };
        self.el.pending.make_contiguous().sort_by_key(rank);
    }

    /// Takes the QoS 1/2 publish with packet id `pkid` out of rumqttc's
    /// queue of requests to resend, so a message given up on is not
    /// replayed first on every reconnect.
    fn forget_publish(&mut self, pkid: u16) -> bool {
        let before = self.el.pending.len();
        self.el
            .pending
            .retain(|r| !matches!(r, Request::Publish(p) if p.pkid == pkid));
        self.el.pending.len() != before
    }
}

/// The next report of `link`, handing the link back (boxed: the future
/// is made anew for every event, and moves only the box). The forwarder keeps
/// this future across its `select!` loop (it is never cancelled midway:
/// a connect in progress must not restart because a message arrived).
pub async fn next(mut link: Box<Link>) -> (Box<Link>, Report) {
    loop {
        if let Some(at) = link.retry_at.take() {
            tokio::time::sleep_until(at).await;
        }
        let report = match link.el.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) if link.session == Session::Wipe => {
                info!("uplink connected; clearing the previous session");
                link.el.mqtt_options.set_clean_session(false);
                link.attempt = 0;
                link.session = if link.client.try_disconnect().is_ok() {
                    Session::Wiping
                } else {
                    link.el.network = None;
                    Session::Lasting
                };
                continue;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if link.session == Session::Wiping => {
                // the wipe's DISCONNECT went out: reconnect with the lasting session
                link.session = Session::Lasting;
                link.el.network = None;
                continue;
            }
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                link.attempt = 0;
                info!(session_present = ack.session_present, "uplink connected");
                Report::Up {
                    session_present: ack.session_present,
                }
            }
            Ok(ev) => Report::Event(ev),
            Err(e) => {
                if let ConnectionError::MqttState(StateError::Deserialization(
                    MqttError::PayloadSizeLimitExceeded(size),
                )) = &e
                {
                    link.counters.commands_dropped.fetch_add(1, Relaxed);
                    warn!(
                        size,
                        "uplink: a packet from upstream is over uplink.max_packet_size; \
                        dropped (counted in commands_dropped), and the next connection clears \
                        the session so the broker does not send it again"
                    );
                    link.el.mqtt_options.set_clean_session(true);
                    link.session = Session::Wipe;
                }
                if let ConnectionError::MqttState(StateError::Unsolicited(pkid)) = &e {
                    link.expect_pubrel(*pkid);
                }
                let delay = backoff(&link.reconnect, link.attempt);
                link.attempt = link.attempt.saturating_add(1);
                log_error(&e, delay);
                link.retry_at = Some(tokio::time::Instant::now() + delay);
                Report::Down
            }
        };
        return (link, report);
    }
}

fn log_error(e: &ConnectionError, delay: Duration) {
    warn!(error = %e, retry_in = ?delay, "uplink connection failed");
}
