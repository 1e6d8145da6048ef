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
mod values;

pub use flight::AckIs;
use values::ROW_OVERHEAD;
pub use values::{Control, Delivery, Offer, Outgoing, Peer, row_bytes};

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::persist;
use super::store::{OutState, QueuedRow, StoreOp, StoredMessage};
use super::subscription::SubOpts;

pub use super::limits::Limits;

#[derive(Debug, Clone)]
enum Flight {
    Sent(Delivery),
    /// PUBREC received; PUBREL owed until PUBCOMP. `disk`: its row's bytes.
    Released {
        seq: u64,
        disk: u64,
    },
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
    pub subscriptions: BTreeMap<String, SubOpts>,
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    inflight: VecDeque<(u16, Flight)>,
    pub inbound: HashSet<u16>,
    control: VecDeque<Control>,
    /// Memory of `control`.
    control_bytes: usize,
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
    /// A bridge (CONNECT protocol level 0x83 / 0x84): its own messages are
    /// not sent back to it.
    pub no_local: bool,
    /// Store ops produced by the last calls, for the caller to push.
    pub ops: Vec<StoreOp>,
    /// Bytes of this session's message rows on disk ([`row_bytes`]).
    disk_bytes: u64,
    /// Change of `disk_bytes` since the router last took it.
    pub disk_delta: i64,
    /// When the last connection ended (restored sessions: when restored).
    pub detached_at: Option<std::time::Instant>,
    /// How long the session outlives its connection (MQTT 5 Session
    /// Expiry Interval, capped; a 3.1.1 persistent session gets the cap).
    pub expiry: std::time::Duration,
    /// The client at the other end.
    pub peer: Peer,
    /// Messages dropped from the queue since the router last took the
    /// count: expired (MQTT-3.3.2-5), and too large for the client.
    pub expired_delta: u64,
    pub oversize_delta: u64,
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
    persist::stored_message(&d.msg, d.qos, d.retain, &d.sub_ids)
}

/// The delivery of a stored row.
fn delivery_of(seq: u64, row: StoredMessage) -> Delivery {
    let (qos, retain, sub_ids) = (row.qos, row.retain, row.sub_ids.clone());
    let mut msg = persist::message_of(row);
    msg.retain = false;
    Delivery {
        msg,
        qos,
        retain,
        seq,
        sub_ids,
        share: None,
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
            control_bytes: 0,
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
            no_local: false,
            ops: Vec::new(),
            disk_bytes: 0,
            disk_delta: 0,
            detached_at: None,
            expiry: std::time::Duration::ZERO,
            peer: Peer::default(),
            expired_delta: 0,
            oversize_delta: 0,
            seen: Default::default(),
        }
    }

    /// Whether its client has been away longer than its expiry at `now`
    /// (never while a connection is attached).
    pub fn expired(&self, now: std::time::Instant) -> bool {
        self.attached.is_none()
            && self
                .detached_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.expiry)
    }

    /// Restores stored rows (in seq order); `total_*` count all rows on disk.
    pub fn restore(&mut self, rows: Vec<QueuedRow>, total_rows: u64, total_bytes: u64) {
        let mut loaded_bytes = 0u64;
        let n = rows.len() as u64;
        let per_row = 2 * self.client_id.len() as u64 + ROW_OVERHEAD;
        self.add_disk((total_bytes + total_rows * per_row) as i64);
        self.detached_at = Some(std::time::Instant::now());
        for r in rows {
            loaded_bytes += (r.msg.topic.len() + r.msg.payload.len()) as u64 + per_row;
            self.next_seq = self.next_seq.max(r.seq + 1);
            self.spool_after = self.spool_after.max(r.seq);
            let d = delivery_of(r.seq, r.msg);
            match r.state {
                OutState::Queued => {
                    self.queued_bytes += d.msg.size();
                    self.queue.push_back(d);
                }
                OutState::Sent { pkid } => self.inflight.push_back((pkid, Flight::Sent(d))),
                OutState::Released { pkid } => {
                    let disk = row_bytes(&self.client_id, &d.msg);
                    self.inflight
                        .push_back((pkid, Flight::Released { seq: r.seq, disk }))
                }
            }
        }
        self.spooled_rows = total_rows.saturating_sub(n);
        self.spooled_bytes = (total_bytes + total_rows * per_row).saturating_sub(loaded_bytes);
        if let Some(max) = self.inflight.iter().map(|(p, _)| *p).max() {
            self.next_pkid = max.wrapping_add(1).max(1);
        }
    }

    /// Marks the session attached to a new connection.
    pub fn attach(&mut self, a: Attached) {
        self.attached = Some(a);
        self.detached_at = None;
        self.resend = !self.inflight.is_empty();
        self.congested = false;
        self.clear_control();
    }

    /// Queues a control packet; `false` when the client now owes more
    /// than `max_client_buffer` (it does not read: disconnect it).
    pub fn push_control(&mut self, c: Control, l: &Limits) -> bool {
        self.control_bytes += c.footprint();
        self.control.push_back(c);
        self.control_bytes <= l.max_client_buffer
    }

    fn pop_control(&mut self) -> Option<Control> {
        let c = self.control.pop_front()?;
        self.control_bytes = self.control_bytes.saturating_sub(c.footprint());
        Some(c)
    }

    fn clear_control(&mut self) {
        self.control = VecDeque::new();
        self.control_bytes = 0;
    }

    fn add_disk(&mut self, bytes: i64) {
        self.disk_bytes = self.disk_bytes.saturating_add_signed(bytes);
        self.disk_delta += bytes;
    }

    /// Bytes of this session's rows on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
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
            let disk = row_bytes(&self.client_id, &d.msg);
            // every row of a persistent session is on disk, in memory too
            if self.disk_bytes + disk > l.max_spooled_bytes {
                return Offer::SpoolFull;
            }
            self.add_disk(disk as i64);
            d.seq = self.next_seq;
            self.next_seq += 1;
            self.ops.push(StoreOp::AddMessage {
                client_id: self.client_id.to_string(),
                seq: d.seq,
                msg: stored(&d),
            });
            if to_disk {
                self.spooled_rows += 1;
                self.spooled_bytes += disk;
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
            let d = delivery_of(r.seq, r.msg);
            let disk = row_bytes(&self.client_id, &d.msg);
            self.spooled_bytes = self.spooled_bytes.saturating_sub(disk);
            self.queued_bytes += d.msg.size();
            self.queue.push_back(d);
        }
        if self.spooled_rows == 0 {
            self.spooled_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use bytes::Bytes;

    /// A row of "0123456789" on topic "t" for client "p": 11 bytes of topic
    /// and payload, the client id twice (row and index) and the overhead.
    pub(super) const ROW: u64 = 11 + 2 + ROW_OVERHEAD;

    pub(super) const L: Limits = Limits {
        max_queued_messages: 4,
        max_queued_bytes: 1 << 20,
        max_spooled_bytes: 7 * ROW,
        max_inflight: 2,
        max_client_buffer: 1024,
        max_topic_levels: 200,
        max_subscriptions: 10,
        max_retained_messages: 10,
        max_retained_bytes: 1 << 20,
        max_sessions: 10,
        max_store_bytes: 1 << 20,
        session_expiry: std::time::Duration::from_secs(60),
        connect_timeout: std::time::Duration::from_secs(10),
        max_session_expiry: std::time::Duration::from_secs(60),
        max_topic_alias: 10,
        max_keepalive: None,
        validate_utf8: false,
        receive_maximum: 100,
    };

    pub(super) fn d(qos: u8, payload: &'static str) -> Delivery {
        Delivery {
            msg: Message::new(
                "t".into(),
                Bytes::from_static(payload.as_bytes()),
                qos,
                false,
            ),
            qos,
            retain: false,
            seq: 0,
            sub_ids: Vec::new(),
            share: None,
        }
    }

    pub(super) fn attached(persistent: bool) -> Session {
        let mut s = Session::new("c".into(), persistent);
        s.attach(Attached {
            generation: 1,
            kick: CancellationToken::new(),
        });
        s
    }

    pub(super) fn publishes(out: &[Outgoing]) -> Vec<(u16, bool)> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Publish { pkid, dup, .. } => Some((*pkid, *dup)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_clean_session_queue_is_bounded_and_full_hands_the_message_back() {
        let mut s = attached(false);
        for _ in 0..4 {
            assert!(matches!(
                s.offer(d(0, "x"), &L),
                Offer::Queued { durable: false }
            ));
        }
        assert!(matches!(s.offer(d(0, "x"), &L), Offer::Full(_)));
        s.detach();
        assert!(
            matches!(s.offer(d(0, "x"), &L), Offer::Dropped),
            "offline QoS 0 is not queued"
        );
    }

    #[test]
    fn a_persistent_session_spills_to_disk_then_drops_past_its_quota() {
        let mut s = Session::new("p".into(), true);
        for _ in 0..4 {
            assert!(matches!(
                s.offer(d(1, "0123456789"), &L),
                Offer::Queued { durable: true }
            ));
        }
        // past the memory quota: on disk only, up to the quota of 7 rows (of
        // topic, payload, client id and overhead) in memory and on disk
        for _ in 0..3 {
            assert!(matches!(
                s.offer(d(1, "0123456789"), &L),
                Offer::Queued { durable: true }
            ));
        }
        assert!(matches!(s.offer(d(1, "0123456789"), &L), Offer::SpoolFull));
        assert_eq!(s.disk_bytes(), 7 * ROW, "every stored row counted");
        let adds = s
            .ops
            .iter()
            .filter(|o| matches!(o, StoreOp::AddMessage { .. }))
            .count();
        assert_eq!(adds, 7, "every queued or spooled message is stored");
        assert_eq!(s.pending(), 7);
        assert_eq!(s.wants_load(&L), None, "memory queue still full");
    }

    #[test]
    fn a_long_client_id_counts_against_the_spool_quota_with_every_row() {
        let id: String = "x".repeat(60_000);
        let mut s = Session::new(id.as_str().into(), true);
        let l = Limits {
            max_spooled_bytes: 1 << 20,
            ..L
        };
        let mut stored = 0;
        while let Offer::Queued { .. } = s.offer(d(1, "0123456789"), &l) {
            stored += 1;
            assert!(stored < 100, "the quota never bites");
        }
        // a row costs the client id twice: 8 rows of ~120 kB fit 1 MiB
        assert_eq!(stored, 8);
        assert!(s.disk_bytes() <= 1 << 20);
    }

    #[test]
    fn the_control_queue_is_bounded_in_bytes() {
        let mut s = attached(false);
        let mut pushed = 0;
        while s.push_control(Control::PingResp, &L) {
            pushed += 1;
            assert!(pushed < 10_000, "never over the bound");
        }
        assert!(pushed > 0 && pushed * std::mem::size_of::<Control>() <= 1024);
        let mut out = Vec::new();
        s.take(&L, &mut out, 1_000);
        assert!(
            s.push_control(Control::PingResp, &L),
            "taken packets free the bound"
        );
    }
}
