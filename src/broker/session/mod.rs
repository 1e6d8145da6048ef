//! One MQTT session: its subscriptions, the bounded queue of messages not
//! yet sent, the QoS 1/2 messages in flight to the client, the inbound
//! QoS 2 packet ids held until PUBREL, and the control packets (acks) the
//! connection owes. Persistent sessions (clean_session=0) mirror every
//! change into the [`Store`], and spill QoS 1/2 messages to it past the
//! memory quota (`max_queued_messages`/`max_queued_bytes`) up to
//! `max_spooled_bytes`.
//!
//! Owns the per-session state and its limits (see `docs/design.md`,
//! "Embedded broker", "Queues and drops"). Must not touch sockets or other sessions:
//! the connection writer takes what to send with [`Session::take`].

mod flight;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::message::Message;
use super::store::{OutState, QueuedRow, StoreOp, StoredMessage};

/// Per-session limits (from `broker:`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_spooled_bytes: u64,
    pub max_inflight: usize,
}

/// One message for one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Message,
    /// Delivered QoS: min(publish, subscription) (MQTT-3.8.4-6).
    pub qos: u8,
    /// Set only for retained messages sent because of a SUBSCRIBE (MQTT-3.3.1-8/9).
    pub retain: bool,
    /// Store row of a persistent session's QoS 1/2 message; 0 otherwise.
    pub seq: u64,
}

#[derive(Debug, Clone)]
enum Flight {
    Sent(Delivery),
    /// PUBREC received; PUBREL owed until PUBCOMP.
    Released {
        seq: u64,
    },
}

/// Packets a connection owes its client, written before messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70, UNSUBACK 0xB0.
    Ack(u8, u16),
    SubAck(u16, Vec<u8>),
    PingResp,
}

/// What the writer sends next.
#[derive(Debug)]
pub enum Outgoing {
    Control(Control),
    Publish { d: Delivery, pkid: u16, dup: bool },
}

/// The result of offering a delivery to a session.
#[derive(Debug)]
pub enum Offer {
    /// In memory, or on disk for a persistent session (`durable`).
    Queued { durable: bool },
    /// The memory queue is full: the caller may wait for room.
    Full(Delivery),
    /// Not queued (offline session and QoS 0, spool quota reached).
    Dropped,
}

/// The connection a session is attached to.
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    /// Cancelled when another connection takes the session over.
    pub kick: CancellationToken,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    pub persistent: bool,
    /// User name of the last login (for ACL read checks per delivery).
    pub user: Option<Arc<str>>,
    pub subscriptions: BTreeMap<String, u8>,
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    inflight: VecDeque<(u16, Flight)>,
    pub inbound: HashSet<u16>,
    control: VecDeque<Control>,
    next_pkid: u16,
    next_seq: u64,
    /// QoS 1/2 rows on disk only: seq > `spool_after`.
    spooled_rows: u64,
    spooled_bytes: u64,
    spool_after: u64,
    pub loading: bool,
    pub attached: Option<Attached>,
    /// Resend everything in flight before new messages (after a reconnect).
    resend: bool,
    /// A publisher waited for room in vain: drop at once until it drains.
    pub congested: bool,
    /// The writer holds messages it took and has not written yet.
    pub writing: bool,
    /// An in-process subscriber of the gateway itself (no ACL applies).
    pub internal: bool,
    /// Store ops produced by the last calls, for the caller to push.
    pub ops: Vec<StoreOp>,
    /// The connection's address, level and time, and drops (the clients list).
    pub seen: super::clients::Seen,
}

/// A session and the wake-ups around it.
#[derive(Debug)]
pub struct Cell {
    pub client_id: Arc<str>,
    state: Mutex<Session>,
    /// Wakes the attached connection's writer.
    pub wake: Notify,
    /// Wakes publishers waiting for room in the queue.
    pub space: Notify,
}

impl Cell {
    pub fn new(session: Session) -> Arc<Cell> {
        Arc::new(Cell {
            client_id: session.client_id.clone(),
            state: Mutex::new(session),
            wake: Notify::new(),
            space: Notify::new(),
        })
    }

    /// The session; a panic elsewhere never leaves it unusable.
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn stored(d: &Delivery) -> StoredMessage {
    StoredMessage {
        topic: d.msg.topic.to_string(),
        payload: d.msg.payload.clone(),
        qos: d.qos,
        retain: d.retain,
    }
}

impl Session {
    pub fn new(client_id: Arc<str>, persistent: bool) -> Session {
        Session {
            client_id,
            persistent,
            user: None,
            subscriptions: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: VecDeque::new(),
            inbound: HashSet::new(),
            control: VecDeque::new(),
            next_pkid: 1,
            next_seq: 1,
            spooled_rows: 0,
            spooled_bytes: 0,
            spool_after: 0,
            loading: false,
            attached: None,
            resend: false,
            congested: false,
            writing: false,
            internal: false,
            ops: Vec::new(),
            seen: Default::default(),
        }
    }

    /// Restores stored rows (in seq order); `total_*` count all rows on disk.
    pub fn restore(&mut self, rows: Vec<QueuedRow>, total_rows: u64, total_bytes: u64) {
        let mut loaded_bytes = 0u64;
        let n = rows.len() as u64;
        for r in rows {
            loaded_bytes += r.msg.payload.len() as u64;
            self.next_seq = self.next_seq.max(r.seq + 1);
            self.spool_after = self.spool_after.max(r.seq);
            let d = Delivery {
                msg: Message::new(r.msg.topic.into(), r.msg.payload, r.msg.qos, false),
                qos: r.msg.qos,
                retain: r.msg.retain,
                seq: r.seq,
            };
            match r.state {
                OutState::Queued => {
                    self.queued_bytes += d.msg.size();
                    self.queue.push_back(d);
                }
                OutState::Sent { pkid } => self.inflight.push_back((pkid, Flight::Sent(d))),
                OutState::Released { pkid } => self
                    .inflight
                    .push_back((pkid, Flight::Released { seq: r.seq })),
            }
        }
        self.spooled_rows = total_rows.saturating_sub(n);
        self.spooled_bytes = total_bytes.saturating_sub(loaded_bytes);
        if let Some(max) = self.inflight.iter().map(|(p, _)| *p).max() {
            self.next_pkid = max.wrapping_add(1).max(1);
        }
    }

    /// Marks the session attached to a new connection.
    pub fn attach(&mut self, a: Attached) {
        self.attached = Some(a);
        self.resend = !self.inflight.is_empty();
        self.congested = false;
        self.control.clear();
    }

    pub fn push_control(&mut self, c: Control) {
        self.control.push_back(c);
    }

    /// Nothing queued in memory, nothing taken by the writer unwritten,
    /// nothing in flight (so the client's acks were read, too).
    pub fn drained(&self) -> bool {
        self.queue.is_empty() && !self.writing && self.inflight.is_empty()
    }

    /// Messages waiting (memory and disk) and in flight.
    pub fn pending(&self) -> u64 {
        self.queue.len() as u64 + self.spooled_rows + self.inflight.len() as u64
    }

    fn full(&self, l: &Limits, size: usize) -> bool {
        self.queue.len() >= l.max_queued_messages
            || (self.queued_bytes + size > l.max_queued_bytes && !self.queue.is_empty())
    }

    /// Offers `d` (see [`Offer`]).
    pub fn offer(&mut self, mut d: Delivery, l: &Limits) -> Offer {
        let size = d.msg.size();
        if self.persistent && d.qos > 0 {
            let to_disk = self.spooled_rows > 0 || self.loading || self.full(l, size);
            if to_disk && self.spooled_bytes + size as u64 > l.max_spooled_bytes {
                return Offer::Dropped;
            }
            d.seq = self.next_seq;
            self.next_seq += 1;
            self.ops.push(StoreOp::AddMessage {
                client_id: self.client_id.to_string(),
                seq: d.seq,
                msg: stored(&d),
            });
            if to_disk {
                self.spooled_rows += 1;
                self.spooled_bytes += size as u64;
            } else {
                self.spool_after = d.seq;
                self.queued_bytes += size;
                self.queue.push_back(d);
            }
            return Offer::Queued { durable: true };
        }
        if self.attached.is_none() {
            return Offer::Dropped; // QoS 0 is not queued for an offline session
        }
        if self.full(l, size) {
            return Offer::Full(d);
        }
        self.queued_bytes += size;
        self.queue.push_back(d);
        Offer::Queued { durable: false }
    }

    /// Whether the writer should load spooled rows now; marks loading.
    pub fn wants_load(&mut self, l: &Limits) -> Option<u64> {
        if self.spooled_rows > 0 && !self.loading && self.queue.len() < l.max_queued_messages / 2 {
            self.loading = true;
            return Some(self.spool_after);
        }
        None
    }

    /// Adds rows loaded from the spool (seq order).
    pub fn loaded(&mut self, rows: Vec<QueuedRow>) {
        self.loading = false;
        for r in rows {
            if r.seq <= self.spool_after {
                continue;
            }
            self.spool_after = r.seq;
            self.spooled_rows = self.spooled_rows.saturating_sub(1);
            let d = Delivery {
                msg: Message::new(r.msg.topic.into(), r.msg.payload, r.msg.qos, false),
                qos: r.msg.qos,
                retain: r.msg.retain,
                seq: r.seq,
            };
            self.spooled_bytes = self.spooled_bytes.saturating_sub(d.msg.size() as u64);
            self.queued_bytes += d.msg.size();
            self.queue.push_back(d);
        }
        if self.spooled_rows == 0 {
            self.spooled_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests;
