//! The forwarder: the drain state machine between the outbox and the
//! upstream connection.
//!
//! Owns the in-flight window, the packet-id map and the
//! upstream connection (it polls [`upstream::next`] itself, so the two
//! events of every message need no task hop). Reads committed rows from the
//! outbox (never writes: acknowledgements go to the writer as
//! [`WriteCmd::Ack`]), hands them to rumqttc, and correlates
//! `Outgoing::Publish(pkid)` with the rows it queued, in order, then
//! `PubAck(pkid)` / `PubComp(pkid)` with the row ids to delete.
//!
//! Window: a message holds one of the `inflight` slots from the moment it
//! is handed to rumqttc until the writer has deleted its row. So at any
//! time at most `inflight` rows have been sent and are still in the
//! outbox: after a crash, at most `inflight` messages go upstream again.
//!
//! Order: rows are sent in id (commit) order; `cursor.rs` decides which
//! rows come next (`fifo`, `live_first`). The outbox is read beside the
//! connection (one spawned read at a time), so acknowledgements keep
//! flowing while rows are read.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tracing::{info, warn};

use super::config::UplinkConfig;
use super::cursor::{Cursor, Plan, READ_AHEAD};
use super::outbox::dead::Failure;
use super::outbox::{self, Progress, WriteCmd};
use super::poison;
use super::upstream::{self, Link, Report};
use super::{Counters, RateLimited};
use crate::reading::Publish;

/// How long the stop waits for the PUBACK of `offline` upstream.
pub const OFFLINE_WAIT: Duration = Duration::from_millis(1500);
/// How long the stop reads acknowledgements after its DISCONNECT, and
/// waits to hand the last ones to the writer.
pub const DISCONNECT_WAIT: Duration = Duration::from_millis(1000);

/// A finished outbox read.
type Read = Result<Vec<outbox::Stored>, outbox::OutboxError>;
/// Most connection events handled before the window is refilled.
const EVENTS_PER_TURN: usize = 256;
/// Bytes (topic + payload) handed to rumqttc and not yet acknowledged, at
/// most, whatever the window: rumqttc keeps a copy of each for resending,
/// and large payloads must not make that hundreds of megabytes.
const WIRE_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes one outbox read should bring, about (rows are counted from the
/// outbox's average row size).
const READ_BYTES: u64 = 2 * 1024 * 1024;

/// The upstream connection's next report, kept across `select!` turns.
type Next = ReusableBoxFuture<'static, (Box<Link>, Report)>;

/// What one packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracked {
    /// An outbox row: id, size and failed tries so far.
    Row(i64, u64, u32),
    /// Not from the outbox (status messages, live sends after a failed commit).
    Untracked,
}

/// The forwarder's inputs and outputs.
pub struct Forwarder {
    pub cfg: Arc<UplinkConfig>,
    pub gateway: Arc<str>,
    pub client: AsyncClient,
    pub pool: SqlitePool,
    pub writer: mpsc::Sender<WriteCmd>,
    pub progress: Progress,
    /// Messages to send live, not buffered (QoS 0, or QoS 1/2 whose commit failed).
    pub live: mpsc::Receiver<Publish>,
    /// Commands from upstream go to the local broker here.
    pub commands: Option<mpsc::Sender<Publish>>,
    /// Commands published locally on forwarded topics must not come back.
    pub counters: Arc<Counters>,
    /// Cancelled when the gateway stops: flush, then say `offline`.
    pub shutdown: CancellationToken,
    /// How long the flush may take, in ms, read when `shutdown` fires
    /// (the bridge sets what is left of its stop budget).
    pub flush_ms: Arc<std::sync::atomic::AtomicU64>,
}

struct State {
    connected: bool,
    /// Handed to rumqttc, waiting for their packet id, in order.
    queued: VecDeque<Tracked>,
    inflight: HashMap<u16, Tracked>,
    /// QoS 2 messages past PUBREC, waiting for PUBCOMP. Kept apart because
    /// rumqttc may give their packet id to a new publish meanwhile.
    released: HashMap<u16, Tracked>,
    /// What to send next.
    cursor: Cursor,
    /// Bytes of outbox rows handed to rumqttc, not yet acknowledged (or,
    /// for QoS 2, not yet PUBREC'd: then rumqttc drops the payload).
    wire_bytes: u64,
    /// Acknowledged, not yet handed to the writer.
    acks: Vec<outbox::Acked>,
    /// Acknowledged ids handed to the writer so far.
    acks_sent: u64,
    /// Acknowledged ids the writer has handled (its `Progress::deleted`).
    acks_done: u64,
    /// Failed tries and given-up rows, not yet handed to the writer.
    failures: Vec<Failure>,
}

impl State {
    /// Sent (or queued to send) and not yet acknowledged.
    fn unacked(&self) -> usize {
        self.queued.len() + self.inflight.len() + self.released.len()
    }

    /// Window slots taken: unacknowledged, plus acknowledged rows whose
    /// delete is not yet committed.
    fn used(&self) -> usize {
        self.unacked() + self.acks.len() + (self.acks_sent - self.acks_done) as usize
    }

    /// rumqttc lost its pending messages (new session): everything not
    /// acknowledged goes back to the ranges, to be sent again in order.
    fn rewind(&mut self) {
        self.wire_bytes = 0;
        let ids = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, t)| t))
            .chain(self.released.drain().map(|(_, t)| t))
            .filter_map(|t| match t {
                Tracked::Row(id, ..) => Some(id),
                Tracked::Untracked => None,
            });
        self.cursor.rewind(ids);
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Forwarder {
    pub async fn run(mut self, link: Link) {
        let mut st = State {
            connected: false,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            released: HashMap::new(),
            cursor: Cursor::new(self.cfg.buffer.drain),
            wire_bytes: 0,
            acks: Vec::new(),
            acks_sent: 0,
            acks_done: 0,
            failures: Vec::new(),
        };
        let mut conn: Next = ReusableBoxFuture::new(upstream::next(Box::new(link)));
        let mut live_drops = RateLimited::new(Duration::from_secs(10));
        let mut flush_until: Option<tokio::time::Instant> = None;
        let mut live_open = true;
        let status_topic = self.cfg.status_topic(&self.gateway);
        // a clone, so a reserved permit does not borrow `self`
        let writer = self.writer.clone();
        // the outbox read in progress, run beside the connection
        let mut reading: Option<(JoinHandle<Read>, Plan)> = None;
        loop {
            let deleting = st.acks_sent > st.acks_done;
            tokio::select! {
                (mut link, r) = conn.get_pin() => {
                    self.on_report(&mut link, r, &mut st, &status_topic);
                    conn.set(upstream::next(link));
                    // take whatever else is ready, so acks and window
                    // refills are handled in batches
                    for _ in 0..EVENTS_PER_TURN {
                        match std::future::poll_fn(|cx| Poll::Ready(conn.poll(cx))).await {
                            Poll::Ready((mut link, r)) => {
                                self.on_report(&mut link, r, &mut st, &status_topic);
                                conn.set(upstream::next(link));
                            }
                            Poll::Pending => break,
                        }
                    }
                }
                rows = join(&mut reading), if reading.is_some() => {
                    let plan = reading.take().expect("polled only while reading").1;
                    match rows {
                        Ok(rows) => st.cursor.on_rows(plan, rows),
                        Err(e) => {
                            self.counters.io_errors.fetch_add(1, Relaxed);
                            warn!(error = %e, "uplink: cannot read the outbox");
                        }
                    }
                }
                _ = self.progress.committed.changed(), if st.cursor.caught_up => st.cursor.wake(),
                _ = self.progress.deleted.changed(), if deleting => {}
                permit = writer.reserve(), if !st.acks.is_empty() && !deleting => {
                    if let Ok(p) = permit {
                        st.acks_sent += st.acks.len() as u64;
                        p.send(WriteCmd::Ack(std::mem::take(&mut st.acks)));
                    }
                }
                m = self.live.recv(), if live_open => match m {
                    Some(p) => self.send_live(p, &mut st, &mut live_drops),
                    None => live_open = false,
                },
                _ = self.shutdown.cancelled(), if flush_until.is_none() => {
                    let ms = self.flush_ms.load(Relaxed);
                    flush_until = Some(tokio::time::Instant::now() + Duration::from_millis(ms));
                    self.commands = None;
                    info!(connected = st.connected, "uplink: flushing the outbox before stopping");
                }
                _ = sleep_until(flush_until) => {
                    warn!(in_flight = st.unacked(), "uplink: flush deadline reached; the rest stays in the outbox");
                    break;
                }
            }
            st.acks_done = *self.progress.deleted.borrow_and_update();
            self.send_acks(&mut st);
            self.send_failures(&mut st);
            if st.connected {
                self.fill(&mut st);
                if reading.is_none() {
                    reading = self.read(&mut st);
                }
            }
            if flush_until.is_some()
                && (!st.connected
                    || (st.cursor.caught_up && st.cursor.ready.is_empty() && st.unacked() == 0))
            {
                break;
            }
        }
        self.stop(&mut st, &mut conn, &status_topic).await;
    }

    /// Says `offline` upstream (when connected), waits for its PUBACK
    /// briefly, disconnects, and hands the last acknowledgements to the
    /// writer.
    async fn stop(&mut self, st: &mut State, conn: &mut Next, status_topic: &str) {
        if st.connected {
            if self
                .client
                .try_publish(status_topic, QoS::AtLeastOnce, true, "offline")
                .is_ok()
            {
                st.queued.push_back(Tracked::Untracked);
                let deadline = tokio::time::Instant::now() + OFFLINE_WAIT;
                while st.connected && st.unacked() > 0 {
                    match tokio::time::timeout_at(deadline, conn.get_pin()).await {
                        Ok((mut link, r)) => {
                            self.on_report(&mut link, r, st, status_topic);
                            conn.set(upstream::next(link));
                        }
                        Err(_) => break,
                    }
                }
            }
            // acknowledgements already on their way still delete their
            // rows: read until the broker closes the connection
            let _ = self.client.try_disconnect();
            let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
            while let Ok((mut link, r)) = tokio::time::timeout_at(deadline, conn.get_pin()).await {
                if matches!(r, Report::Down) {
                    conn.set(upstream::next(link));
                    break;
                }
                self.on_report(&mut link, r, st, status_topic);
                conn.set(upstream::next(link));
            }
        }
        let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
        for cmd in [
            WriteCmd::Ack(std::mem::take(&mut st.acks)),
            WriteCmd::Failed(std::mem::take(&mut st.failures)),
        ] {
            let empty = match &cmd {
                WriteCmd::Ack(a) => a.is_empty(),
                WriteCmd::Failed(f) => f.is_empty(),
                WriteCmd::Insert { .. } => true,
            };
            if !empty
                && !matches!(
                    tokio::time::timeout_at(deadline, self.writer.send(cmd)).await,
                    Ok(Ok(()))
                )
            {
                warn!(
                    "uplink: outbox writer gone or stuck; acknowledged messages stay in the outbox (sent again after the restart)"
                );
            }
        }
        info!("uplink stopped");
    }

    /// Hands the acknowledged ids to the writer when its previous delete
    /// is done or a quarter of the window waits (group commit: one delete
    /// per commit, not one per turn), if it has room now; else the
    /// `reserve` branch of the loop does when it has.
    fn send_acks(&mut self, st: &mut State) {
        let busy = st.acks_sent > st.acks_done;
        if st.acks.is_empty() || (busy && st.acks.len() < self.cfg.inflight as usize / 4) {
            return;
        }
        let ids = std::mem::take(&mut st.acks);
        let n = ids.len() as u64;
        match self.writer.try_send(WriteCmd::Ack(ids)) {
            Ok(()) => st.acks_sent += n,
            Err(mpsc::error::TrySendError::Full(WriteCmd::Ack(ids))) => st.acks = ids,
            Err(_) => {
                warn!("uplink: outbox writer gone; acknowledged messages stay in the outbox");
            }
        }
    }

    fn on_report(&mut self, link: &mut Link, r: Report, st: &mut State, status_topic: &str) {
        match r {
            Report::Up { session_present } => {
                st.connected = true;
                self.counters
                    .connected
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                if !session_present {
                    st.rewind();
                }
                st.cursor.mark_live(*self.progress.committed.borrow() + 1);
                st.cursor.wake();
                for c in &self.cfg.commands {
                    if let Err(e) = self
                        .client
                        .try_subscribe(c.filter.clone(), qos(c.qos.as_u8()))
                    {
                        warn!(filter = %c.filter, error = %e, "cannot subscribe to commands");
                    }
                }
                if self
                    .client
                    .try_publish(status_topic, QoS::AtLeastOnce, true, "online")
                    .is_ok()
                {
                    st.queued.push_back(Tracked::Untracked);
                }
            }
            Report::Down => {
                if st.connected {
                    self.blame(link, st);
                }
                st.connected = false;
                self.counters
                    .connected
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            Report::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if pkid != 0 && !st.inflight.contains_key(&pkid) {
                    match st.queued.pop_front() {
                        Some(t) => {
                            st.inflight.insert(pkid, t);
                        }
                        None => warn!(
                            pkid,
                            "uplink: a publish went out that the bridge did not queue"
                        ),
                    }
                }
            }
            Report::Event(Event::Incoming(Incoming::PubAck(a))) => {
                let t = st.inflight.remove(&a.pkid);
                off_the_wire(st, t);
                self.acked(st, t);
            }
            Report::Event(Event::Incoming(Incoming::PubRec(r))) => {
                if let Some(t) = st.inflight.remove(&r.pkid) {
                    off_the_wire(st, Some(t));
                    st.released.insert(r.pkid, t);
                }
            }
            Report::Event(Event::Incoming(Incoming::PubComp(c))) => {
                let t = st.released.remove(&c.pkid);
                self.acked(st, t);
            }
            Report::Event(Event::Incoming(Incoming::Publish(p))) => self.command(p),
            Report::Event(_) => {}
        }
    }

    /// A connection that was up dropped: the oldest message sent and not
    /// acknowledged takes the blame (a broker that refuses a message closes
    /// the connection when it reads it, and rumqttc resends it first after
    /// the reconnect). After `max_attempts` tries it is given up on: out of
    /// rumqttc's resend queue, to the dead-letter table.
    fn blame(&mut self, link: &mut Link, st: &mut State) {
        let suspect = st
            .inflight
            .iter()
            .filter_map(|(pkid, t)| match t {
                Tracked::Row(id, ..) => Some((*id, *pkid)),
                Tracked::Untracked => None,
            })
            .min();
        let Some((_, pkid)) = suspect else { return };
        let Some(Tracked::Row(id, _, attempts)) = st.inflight.get_mut(&pkid) else {
            return;
        };
        *attempts = attempts.saturating_add(1);
        let (id, attempts) = (*id, *attempts);
        let dead = (attempts >= self.cfg.max_attempts).then(|| {
            let t = st.inflight.remove(&pkid);
            off_the_wire(st, t);
            link.forget_publish(pkid);
            format!("the upstream connection dropped {attempts} times while it was the oldest message unacknowledged")
        });
        st.failures.push(Failure { id, attempts, dead });
    }

    /// Hands failed tries to the writer if it has room now (else later).
    fn send_failures(&mut self, st: &mut State) {
        if st.failures.is_empty() {
            return;
        }
        let f = std::mem::take(&mut st.failures);
        match self.writer.try_send(WriteCmd::Failed(f)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(WriteCmd::Failed(f))) => st.failures = f,
            Err(_) => warn!("uplink: outbox writer gone; failed tries not recorded"),
        }
    }

    fn acked(&mut self, st: &mut State, t: Option<Tracked>) {
        if let Some(Tracked::Row(id, size, _)) = t {
            st.acks.push((id, size));
            self.counters.acked.fetch_add(1, Relaxed);
        }
    }

    fn command(&mut self, p: rumqttc::Publish) {
        let Some(rule) = self
            .cfg
            .commands
            .iter()
            .find(|c| super::filters::matches(&c.filter, &p.topic))
        else {
            return;
        };
        let topic = p
            .topic
            .strip_prefix(rule.strip_prefix.as_str())
            .unwrap_or(&p.topic)
            .to_string();
        let Some(tx) = &self.commands else { return };
        info!(upstream = %p.topic, topic = %topic, "uplink: command from upstream");
        let publish = Publish {
            topic,
            payload: p.payload,
            qos: rule.qos,
            retain: false,
        };
        if tx.try_send(publish).is_err() {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %p.topic, "uplink: local publish queue full; command dropped");
        }
    }

    fn send_live(&mut self, p: Publish, st: &mut State, log: &mut RateLimited) {
        let q = p.qos.as_u8();
        let max = self.cfg.max_packet_size.bytes();
        if let Some(reason) = poison::too_large(&p.topic, p.payload.len(), max) {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            warn!(topic = %p.topic, %reason, "uplink: live message dropped");
            return;
        }
        let ok = st.connected
            && self
                .client
                .try_publish(p.topic.as_str(), qos(q), p.retain, p.payload)
                .is_ok();
        if ok {
            self.counters.sent.fetch_add(1, Relaxed);
            if q > 0 {
                // not from the outbox: its ack deletes nothing
                st.queued.push_back(Tracked::Untracked);
            }
        } else {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            if let Some(suppressed) = log.ready() {
                warn!(topic = %p.topic, suppressed_logs = suppressed,
                    "uplink down: live message (QoS 0 or not buffered) dropped");
            }
        }
    }

    /// Hands read-ahead rows to rumqttc while the window has room.
    fn fill(&mut self, st: &mut State) {
        let window = self.cfg.inflight as usize;
        while st.used() < window && (st.wire_bytes < WIRE_BYTES || st.unacked() == 0) {
            let Some(r) = st.cursor.ready.pop_front() else {
                return;
            };
            let max = self.cfg.max_packet_size.bytes();
            if let Some(reason) = poison::too_large(&r.topic, r.payload.len(), max) {
                st.failures.push(Failure {
                    id: r.id,
                    attempts: r.attempts,
                    dead: Some(reason),
                });
                continue;
            }
            // the request channel holds the window and more: this fails
            // only if rumqttc is gone; the row is then read again later
            if !try_publish(&self.client, r.topic, qos(r.qos), r.retain, r.payload) {
                st.cursor.rewind(std::iter::once(r.id));
                return;
            }
            st.queued
                .push_back(Tracked::Row(r.id, r.size as u64, r.attempts));
            st.wire_bytes += r.size as u64;
            self.counters.sent.fetch_add(1, Relaxed);
        }
    }

    /// Starts the next outbox read if the cursor wants one.
    fn read(&mut self, st: &mut State) -> Option<(JoinHandle<Read>, Plan)> {
        let room = (self.cfg.inflight as usize).saturating_sub(st.used());
        let depth = self.counters.depth.load(Relaxed).max(1);
        let avg = (self.counters.depth_bytes.load(Relaxed) / depth).max(1);
        let rows = (READ_BYTES / avg).clamp(1, READ_AHEAD as u64) as usize;
        if !st.cursor.wants_read(room, rows) {
            return None;
        }
        let plan = st.cursor.plan(room, rows)?;
        if plan.open_ended() {
            // what is committed now is seen: a later commit wakes us again
            self.progress.committed.borrow_and_update();
        }
        let pool = self.pool.clone();
        let task =
            tokio::spawn(async move { outbox::fetch(&pool, plan.lo, plan.hi, plan.limit).await });
        Some((task, plan))
    }
}

/// A PUBACK or PUBREC: rumqttc no longer holds the payload of `t`.
fn off_the_wire(st: &mut State, t: Option<Tracked>) {
    if let Some(Tracked::Row(_, size, _)) = t {
        st.wire_bytes = st.wire_bytes.saturating_sub(size);
    }
}

/// Queues a publish on rumqttc's request channel without waiting: the
/// event loop is polled by this same task, so waiting for room would never
/// end. Moves the payload without a copy.
fn try_publish(client: &AsyncClient, topic: String, q: QoS, retain: bool, payload: Bytes) -> bool {
    matches!(
        super::poll_once(client.publish_bytes(topic, q, retain, payload)),
        Some(Ok(()))
    )
}

/// The outcome of the read in progress.
async fn join(reading: &mut Option<(JoinHandle<Read>, Plan)>) -> Read {
    match reading {
        Some((task, _)) => task
            .await
            .unwrap_or_else(|e| Err(outbox::OutboxError::Task(e.to_string()))),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
