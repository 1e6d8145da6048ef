//! The forwarder: the drain state machine between the outbox and the
//! upstream connection.
//!
//! Owns the send cursor, the in-flight window and the packet-id map. Reads
//! committed rows from the outbox (never writes: acknowledgements go to the
//! writer as [`WriteCmd::Ack`]), hands them to rumqttc, and correlates
//! `Outgoing::Publish(pkid)` with the rows it queued, in order, then
//! `PubAck(pkid)` / `PubComp(pkid)` with the row ids to delete.
//!
//! Order: rows are sent in id (commit) order. `drain: fifo` uses one cursor.
//! `drain: live_first` marks, at each connect, the rows committed from then
//! on as live: they are sent first, and the backlog (older rows, a list of
//! id ranges) fills the rest of the window, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{Drain, UplinkConfig};
use super::outbox::{self, WriteCmd};
use super::upstream::Report;
use super::{Counters, RateLimited};
use crate::reading::Publish;

/// Rows read from the outbox at a time.
const READ_AHEAD: usize = 512;
/// Acknowledged rows are deleted in batches: at this many, or after
/// [`ACK_DELAY`]. A crash loses at most these deletes (sent again later).
const ACK_BATCH: usize = 1024;
const ACK_DELAY: Duration = Duration::from_millis(20);

/// What one packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracked {
    Row(i64),
    /// Not from the outbox (status messages, live sends after a failed commit).
    Untracked,
}

/// The forwarder's inputs and outputs.
pub struct Forwarder {
    pub cfg: Arc<UplinkConfig>,
    pub gateway: Arc<str>,
    pub client: AsyncClient,
    pub reports: mpsc::Receiver<Report>,
    pub pool: SqlitePool,
    pub writer: mpsc::Sender<WriteCmd>,
    pub committed: watch::Receiver<i64>,
    /// Messages to send live, not buffered (QoS 0, or QoS 1/2 whose commit failed).
    pub live: mpsc::Receiver<Publish>,
    /// Commands from upstream go to the local broker here.
    pub commands: Option<mpsc::Sender<Publish>>,
    /// Commands published locally on forwarded topics must not come back.
    pub echoes: super::Echoes,
    pub counters: Arc<Counters>,
    /// Cancelled when the gateway stops: flush, then say `offline`.
    pub shutdown: CancellationToken,
    pub flush_deadline: Duration,
}

struct State {
    connected: bool,
    /// Handed to rumqttc, waiting for their packet id, in order.
    queued: VecDeque<Tracked>,
    inflight: HashMap<u16, Tracked>,
    /// QoS 2 messages past PUBREC, waiting for PUBCOMP. Kept apart because
    /// rumqttc may give their packet id to a new publish meanwhile.
    released: HashMap<u16, Tracked>,
    /// Not yet handed out: id ranges `[lo, hi)`, ascending.
    ranges: VecDeque<(i64, i64)>,
    /// `live_first`: the next live id to look at.
    live: Option<i64>,
    /// Read ahead from the outbox, not yet handed to rumqttc.
    ready: VecDeque<outbox::Stored>,
    /// Nothing left to read until the committed id moves.
    caught_up: bool,
    acks: Vec<i64>,
    status_acked: bool,
    connects: u64,
}

impl State {
    fn used(&self) -> usize {
        self.queued.len() + self.inflight.len() + self.released.len()
    }

    /// rumqttc lost its pending messages (new session): everything not
    /// acknowledged goes back to the ranges, to be sent again in order.
    fn rewind(&mut self) {
        let mut ids: Vec<i64> = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, t)| t))
            .chain(self.released.drain().map(|(_, t)| t))
            .chain(self.ready.drain(..).map(|r| Tracked::Row(r.id)))
            .filter_map(|t| match t {
                Tracked::Row(id) => Some(id),
                Tracked::Untracked => None,
            })
            .collect();
        ids.sort_unstable();
        let mut ranges: Vec<(i64, i64)> = self.ranges.drain(..).collect();
        ranges.extend(ids.into_iter().map(|id| (id, id + 1)));
        ranges.sort_unstable();
        self.ranges = ranges.into();
        self.caught_up = false;
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
    pub async fn run(mut self) {
        let mut st = State {
            connected: false,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            released: HashMap::new(),
            ready: VecDeque::new(),
            ranges: VecDeque::new(),
            live: None,
            caught_up: false,
            acks: Vec::new(),
            status_acked: false,
            connects: 0,
        };
        if self.cfg.buffer.drain == Drain::Fifo {
            st.ranges.push_back((0, i64::MAX));
        }
        let mut live_drops = RateLimited::new(Duration::from_secs(10));
        let mut flush_until: Option<tokio::time::Instant> = None;
        let mut live_open = true;
        let mut acks_due: Option<tokio::time::Instant> = None;
        let status_topic = self.cfg.status_topic(&self.gateway);
        loop {
            tokio::select! {
                r = self.reports.recv() => match r {
                    Some(r) => self.on_report(r, &mut st, &status_topic),
                    None => break,
                },
                _ = self.committed.changed(), if st.caught_up => st.caught_up = false,
                m = self.live.recv(), if live_open => match m {
                    Some(p) => self.send_live(p, &mut st, &mut live_drops),
                    None => live_open = false,
                },
                _ = self.shutdown.cancelled(), if flush_until.is_none() => {
                    flush_until = Some(tokio::time::Instant::now() + self.flush_deadline);
                    self.commands = None;
                    info!(connected = st.connected, "uplink: flushing the outbox before stopping");
                }
                _ = sleep_until(acks_due) => {}
                _ = sleep_until(flush_until) => {
                    warn!(in_flight = st.used(), "uplink: flush deadline reached; the rest stays in the outbox");
                    break;
                }
            }
            // take whatever else the connection reported, so acks and
            // window refills are handled in batches
            for _ in 0..1024 {
                match self.reports.try_recv() {
                    Ok(r) => self.on_report(r, &mut st, &status_topic),
                    Err(_) => break,
                }
            }
            if st.connected {
                self.fill(&mut st).await;
            }
            let now = tokio::time::Instant::now();
            if st.acks.len() >= ACK_BATCH
                || acks_due.is_some_and(|d| d <= now)
                || flush_until.is_some()
            {
                self.flush_acks(&mut st).await;
                acks_due = None;
            } else if !st.acks.is_empty() && acks_due.is_none() {
                acks_due = Some(now + ACK_DELAY);
            }
            if flush_until.is_some()
                && (!st.connected || (st.caught_up && st.ready.is_empty() && st.used() == 0))
            {
                break;
            }
        }
        self.stop(&mut st, &status_topic).await;
    }

    /// Says `offline` upstream (when connected), waits for its PUBACK
    /// briefly, and disconnects.
    async fn stop(&mut self, st: &mut State, status_topic: &str) {
        if st.connected {
            st.status_acked = false;
            if self
                .client
                .try_publish(status_topic, QoS::AtLeastOnce, true, "offline")
                .is_ok()
            {
                st.queued.push_back(Tracked::Untracked);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while st.connected && st.used() > 0 {
                    match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                        Ok(Some(r)) => self.on_report(r, st, status_topic),
                        _ => break,
                    }
                }
            }
            let _ = self.client.try_disconnect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(r)) = tokio::time::timeout_at(deadline, self.reports.recv()).await {
                if matches!(r, Report::Event(Event::Outgoing(Outgoing::Disconnect))) {
                    break;
                }
            }
        }
        self.flush_acks(st).await;
        info!("uplink stopped");
    }

    fn on_report(&mut self, r: Report, st: &mut State, status_topic: &str) {
        match r {
            Report::Up { session_present } => {
                st.connected = true;
                self.counters
                    .connected
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                st.connects += 1;
                if !session_present {
                    st.rewind();
                }
                if self.cfg.buffer.drain == Drain::LiveFirst {
                    let now = *self.committed.borrow() + 1;
                    match st.live {
                        Some(l) if l < now => st.ranges.push_back((l, now)),
                        Some(_) => {}
                        None => st.ranges.push_back((0, now)),
                    }
                    st.live = Some(now);
                }
                st.caught_up = false;
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
                self.acked(st, t);
            }
            Report::Event(Event::Incoming(Incoming::PubRec(r))) => {
                if let Some(t) = st.inflight.remove(&r.pkid) {
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

    fn acked(&mut self, st: &mut State, t: Option<Tracked>) {
        if let Some(Tracked::Row(id)) = t {
            st.acks.push(id);
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
        if self.cfg.forward_rule(&publish.topic).is_some() {
            self.echoes.expect(&publish);
        }
        if tx.try_send(publish).is_err() {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %p.topic, "uplink: local publish queue full; command dropped");
        }
    }

    fn send_live(&mut self, p: Publish, st: &mut State, log: &mut RateLimited) {
        let q = p.qos.as_u8();
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

    /// Fills the in-flight window from the outbox, reading ahead
    /// [`READ_AHEAD`] rows at a time.
    async fn fill(&mut self, st: &mut State) {
        // rumqttc keeps at most `inflight` unacknowledged on the wire; one
        // more window waits in its request channel so a PUBACK is followed
        // by the next PUBLISH at once, without a round trip through here
        let window = 2 * self.cfg.inflight as usize;
        while st.connected && st.used() < window {
            if st.ready.is_empty() {
                if st.caught_up {
                    return;
                }
                // live_first reads the backlog only as far as the window has
                // room, so a live row never waits behind read-ahead backlog
                let backlog_want = match self.cfg.buffer.drain {
                    Drain::LiveFirst => (window - st.used()).min(self.cfg.inflight as usize),
                    Drain::Fifo => READ_AHEAD,
                };
                match self.next_rows(st, READ_AHEAD, backlog_want).await {
                    Ok(rows) if rows.is_empty() => {
                        st.caught_up = true;
                        return;
                    }
                    Ok(rows) => st.ready.extend(rows),
                    Err(e) => {
                        self.counters.io_errors.fetch_add(1, Relaxed);
                        warn!(error = %e, "uplink: cannot read the outbox");
                        return;
                    }
                }
            }
            while st.used() < window {
                let Some(r) = st.ready.pop_front() else { break };
                // the request channel holds more than the window: this
                // never waits for long, and moves the payload without a copy
                if self
                    .client
                    .publish_bytes(r.topic.clone(), qos(r.qos), r.retain, r.payload.clone())
                    .await
                    .is_err()
                {
                    st.ready.push_front(r);
                    return;
                }
                st.queued.push_back(Tracked::Row(r.id));
                self.counters.sent.fetch_add(1, Relaxed);
            }
        }
    }

    async fn next_rows(
        &mut self,
        st: &mut State,
        want_live: usize,
        want: usize,
    ) -> Result<Vec<outbox::Stored>, outbox::OutboxError> {
        // mark what is committed now as seen: a later commit wakes us again
        self.committed.borrow_and_update();
        if let Some(l) = st.live {
            let rows = outbox::fetch(&self.pool, l, i64::MAX, want_live).await?;
            if let Some(last) = rows.last() {
                st.live = Some(last.id + 1);
                return Ok(rows);
            }
        }
        while let Some(&(lo, hi)) = st.ranges.front() {
            let rows = outbox::fetch(&self.pool, lo, hi, want).await?;
            match rows.last() {
                Some(last) => {
                    let next = last.id + 1;
                    if next >= hi {
                        st.ranges.pop_front();
                    } else if let Some(front) = st.ranges.front_mut() {
                        front.0 = next;
                    }
                    return Ok(rows);
                }
                None if hi == i64::MAX => return Ok(rows),
                None => {
                    st.ranges.pop_front();
                }
            }
        }
        Ok(Vec::new())
    }

    async fn flush_acks(&mut self, st: &mut State) {
        if !st.acks.is_empty() {
            let ids = std::mem::take(&mut st.acks);
            if self.writer.send(WriteCmd::Ack(ids)).await.is_err() {
                warn!("uplink: outbox writer gone; acknowledged messages stay in the outbox");
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
