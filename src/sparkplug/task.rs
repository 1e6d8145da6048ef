//! The node's task: takes readings (from the rules stage, once mapped, or
//! from the sources when the rules stage has nothing to do: [`Readings`]),
//! device status (from its in-process subscription on the embedded
//! broker), STATE and
//! commands (from that subscription, or from its upstream session with
//! target uplink), runs them through the [`Node`] and carries out what it
//! asks: publishes on the [`Sink`], stores history, hands writes to the
//! `.../set` path, paces the history drain, advances bdSeq per session,
//! reconnects the upstream session, and sends NDEATH when the sources have
//! stopped.
//!
//! Owns the loop and the drain's pacing and cursor. Must not build
//! payloads (the node and `encode.rs` do) nor talk to devices.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::history::{Committed, History, Lost, Stored};
use super::host::HostWatch;
use super::link::{Rows, Sink};
use super::metrics;
use super::node::{Node, Out, Phase};
use super::payload::Payload;
use super::seq::BdSeq;
use super::uplink::LinkEvent;
use crate::broker::{BrokerHandle, Message};
use crate::metrics::labels;
use crate::reading::batch::ReadingsReceiver;
use crate::reading::{Publish, Qos, Reading, now_ms};

/// How long a clean stop waits for the upstream session to write its
/// NDEATH and close (within the rules stage's shutdown deadline).
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// How the drain of stored history is paced.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Metrics per second.
    pub rate: u32,
    /// Metrics per message at most.
    pub batch: u32,
}

/// What the task needs besides the node.
pub struct Parts {
    pub node: Node,
    pub bd_seq: BdSeq,
    /// `Some` with a primary host: births wait for it.
    pub host: Option<HostWatch>,
    pub history: Option<History>,
    /// The embedded broker (DCMD writes go there, whatever the sink).
    pub handle: BrokerHandle,
    pub sink: Sink,
    pub gateway: Arc<str>,
    pub state_topic: Option<String>,
    pub pace: Pace,
}

/// The drain of stored history: idle, or due at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    Idle,
    Due(Instant),
}

struct Task {
    p: Parts,
    drain: Drain,
    /// The last stored row the drain handed out in this session.
    cursor: i64,
    status_prefix: String,
}

/// The next event of the upstream session; never, with target local.
async fn link_event(sink: &mut Sink) -> Option<LinkEvent> {
    match sink.link() {
        Some(l) => l.next_event().await,
        None => std::future::pending().await,
    }
}

/// Ends at `when`; never without. No timer is made until it is polled
/// with a time (a batch of readings wakes the loop far more often than
/// any of its timers is due).
async fn at(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Where the node's readings come from.
pub enum Readings {
    /// The rules stage hands on each batch once mapped (`rules::Onward`).
    AfterRules(mpsc::Receiver<Vec<Reading>>),
    /// The sources' own channel: with `rules.payload: none` and no
    /// scripts the rules stage would have nothing to do, so it does not
    /// run and the node reads the sources (one task hop less per batch).
    FromSources(ReadingsReceiver),
}

impl Readings {
    /// The next batch; `None` once every sender is gone.
    async fn recv(&mut self) -> Option<Vec<Reading>> {
        match self {
            Readings::AfterRules(rx) => rx.recv().await,
            Readings::FromSources(rx) => rx.recv().await,
        }
    }
}

/// Runs the node until `readings` closes (the sources have stopped), then
/// sends NDEATH when births were sent.
pub async fn run(parts: Parts, mut readings: Readings, mut messages: mpsc::Receiver<Message>) {
    let status_prefix = format!("{}/status/", parts.gateway);
    let mut t = Task {
        p: parts,
        drain: Drain::Idle,
        cursor: 0,
        status_prefix,
    };
    if t.p.host.is_none() && t.p.sink.link().is_none() {
        t.go_live().await;
    }
    loop {
        let due = match t.drain {
            Drain::Due(at) => Some(at),
            Drain::Idle => None,
        };
        let retry = t.p.sink.link().and_then(|l| l.retry_at());
        let commit = t.p.history.as_ref().and_then(History::due);
        tokio::select! {
            batch = readings.recv() => match batch {
                Some(b) => {
                    let out = t.p.node.on_readings(&b, now_ms());
                    // dropped while its readings are still in the caches
                    drop(b);
                    t.carry_out(out).await;
                }
                None => break,
            },
            Some(m) = messages.recv() => t.on_message(&m.topic, &m.payload).await,
            Some(ev) = link_event(&mut t.p.sink) => t.on_link(ev).await,
            () = at(due) => t.drain_step().await,
            () = at(retry) => t.connect(),
            () = at(commit) => t.commit_history().await,
        }
    }
    t.stop().await;
}

impl Task {
    /// Births with this session's bdSeq, then the stored history drains.
    async fn go_live(&mut self) {
        // what the outage left waiting goes before the births' history
        self.commit_history().await;
        self.cursor = 0;
        let out = self.p.node.births(self.p.bd_seq.current(), now_ms());
        self.carry_out(out).await;
        info!(bd_seq = self.p.bd_seq.current(), "Sparkplug births sent");
        if self.p.history.is_some() {
            self.drain = Drain::Due(Instant::now());
        }
    }

    /// The clean stop: NDEATH when live, then the upstream session ends.
    async fn stop(&mut self) {
        self.commit_history().await;
        if self.p.node.phase() == Phase::Live {
            let mut death = self.p.node.ndeath(now_ms());
            death.qos = Qos::AtLeastOnce;
            self.send(death).await;
            info!(
                bd_seq = self.p.node.bd_seq(),
                "Sparkplug NDEATH sent (clean stop)"
            );
        }
        if let Some(l) = self.p.sink.link() {
            l.disconnect().await;
            // the NDEATH and the DISCONNECT are written before the process
            // goes on to stop (the pump reports the end)
            let closed = async {
                while let Some(ev) = l.next_event().await {
                    if matches!(ev, LinkEvent::Down(_)) {
                        break;
                    }
                }
            };
            if tokio::time::timeout(STOP_FLUSH, closed).await.is_err() {
                warn!("the upstream session did not close in time after the NDEATH");
            }
        }
    }

    async fn carry_out(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(p) => self.send(p).await,
                Out::Store { device, payload } => self.store(&device, &payload).await,
                Out::Write {
                    device,
                    point,
                    value,
                } => {
                    let topic = format!("{}/{device}/{point}/set", self.p.gateway);
                    let payload = Bytes::from(value.to_json().to_string());
                    info!(%device, %point, %value, "Sparkplug DCMD write");
                    self.p
                        .handle
                        .publish(Publish {
                            topic,
                            payload,
                            qos: Qos::AtLeastOnce,
                            retain: false,
                        })
                        .await;
                }
            }
        }
    }

    async fn send(&self, p: Publish) {
        metrics::sent(&p.topic);
        if !self.p.sink.publish(p).await {
            warn!(
                "a Sparkplug message could not be sent (an invalid topic, or no upstream session)"
            );
        }
    }

    /// Keeps a DDATA as history (committed with its window's others).
    async fn store(&mut self, device: &str, payload: &Payload) {
        let Some(h) = &mut self.p.history else {
            count_history("lost", 1);
            return;
        };
        let done = h.add(device, payload).await;
        if let Some(done) = done.transpose() {
            self.counted(done);
        }
    }

    /// Commits the history waiting: its window ended, a session goes live
    /// (the drain reads the file), or the node stops.
    async fn commit_history(&mut self) {
        if let Some(h) = &mut self.p.history {
            let done = h.commit().await;
            self.counted(done);
        }
    }

    /// Counts (and logs) what a history commit did.
    fn counted(&self, done: Result<Committed, Lost>) {
        match done {
            Ok(c) => {
                count_history("stored", c.stored);
                if c.dropped > 0 {
                    warn!(
                        dropped = c.dropped,
                        max = self.p.history.as_ref().map_or(0, |h| h.rows()),
                        "Sparkplug history full: the oldest DDATA dropped"
                    );
                    count_history("dropped", c.dropped);
                }
            }
            Err(lost) => {
                warn!(error = %lost.error, lost = lost.rows, "Sparkplug history not stored; the DDATA are lost");
                count_history("lost", lost.rows);
            }
        }
    }

    /// A new upstream session, with its bdSeq's NDEATH as the will.
    fn connect(&mut self) {
        let will = self.p.node.ndeath_with(self.p.bd_seq.current(), now_ms());
        if let Some(l) = self.p.sink.link() {
            l.connect(will);
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                if let Some(l) = self.p.sink.link() {
                    l.connected();
                }
                if self.p.host.is_none() {
                    self.go_live().await;
                }
            }
            LinkEvent::Message { topic, payload } => self.on_message(&topic, &payload).await,
            LinkEvent::Sent(pkid) => {
                if let Some(l) = self.p.sink.link() {
                    l.sent(pkid);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some(rows) = self.p.sink.link().and_then(|l| l.acked(pkid)) {
                    self.delete(rows).await;
                }
            }
            LinkEvent::Down(why) => self.link_down(&why),
        }
    }

    /// The session ended: data is stored; the next session gets the next
    /// bdSeq (the broker sent this one's will); history not acknowledged
    /// is sent again after the next births.
    fn link_down(&mut self, why: &str) {
        self.p.node.link_down();
        self.drain = Drain::Idle;
        if let Some(l) = self.p.sink.link() {
            l.down(why);
        }
        if let Err(e) = self.p.bd_seq.advance() {
            warn!(error = %e, "the next bdSeq could not be saved");
        }
    }

    async fn delete(&mut self, (first, last): Rows) {
        if let Some(h) = &mut self.p.history
            && let Err(e) = h.delete(first, last).await
        {
            warn!(error = %e, "sent Sparkplug history could not be deleted; it may be sent again");
        }
    }

    async fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let now = now_ms();
        if let Some(device) = topic.strip_prefix(self.status_prefix.as_str()) {
            let online = serde_json::from_slice::<serde_json::Value>(payload)
                .is_ok_and(|v| v["state"] == "online");
            let out = self.p.node.on_status(device, online, now);
            self.carry_out(out).await;
            return;
        }
        if self.p.state_topic.as_deref() == Some(topic) {
            self.on_state(payload).await;
            return;
        }
        let (out, problems) = self.p.node.on_command(topic, payload, now);
        for p in problems {
            warn!(topic, "{p}");
            metrics::get()
                .commands_refused
                .get_or_create(&labels("reason", "refused"))
                .inc();
        }
        self.carry_out(out).await;
    }

    /// The primary host's STATE: online -> births (and the drain); offline
    /// -> NDEATH, data stored, and a new bdSeq for the next session (with
    /// target uplink: a disconnect, as the specification asks, and a new
    /// session that waits for the host).
    async fn on_state(&mut self, payload: &[u8]) {
        let Some(watch) = &mut self.p.host else {
            return;
        };
        match watch.on_state(payload) {
            Some(true) if self.p.node.phase() == Phase::Waiting => self.go_live().await,
            Some(false) if self.p.node.phase() == Phase::Live => {
                let mut out = self.p.node.host_offline(now_ms());
                for o in &mut out {
                    if let Out::Send(p) = o {
                        p.qos = Qos::AtLeastOnce;
                    }
                }
                self.carry_out(out).await;
                self.drain = Drain::Idle;
                if let Some(l) = self.p.sink.link() {
                    // the pump reports the end: `link_down` advances bdSeq
                    l.disconnect().await;
                    return;
                }
                match self.p.bd_seq.advance() {
                    Ok(n) => info!(
                        next_bd_seq = n,
                        "primary host offline: NDEATH sent, storing data"
                    ),
                    Err(e) => {
                        warn!(error = %e, "primary host offline; the next bdSeq could not be saved")
                    }
                }
            }
            _ => {}
        }
    }

    /// Sends the next messages of stored history (at most `pace.batch`
    /// metrics each, consecutive rows of one device merged) and sets the
    /// next step after as long as `pace.rate` asks for. Local: a row is
    /// deleted once published; uplink: once its PUBACK came.
    async fn drain_step(&mut self) {
        self.drain = Drain::Idle;
        if self.p.node.phase() != Phase::Live {
            return;
        }
        let Some(h) = &mut self.p.history else {
            return;
        };
        let rows = match h.oldest(self.cursor, self.p.pace.batch).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Sparkplug history could not be read; retrying in 1 s");
                self.drain = Drain::Due(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        if rows.is_empty() {
            info!("Sparkplug history sent");
            return;
        }
        let mut metrics_sent = 0usize;
        for (device, rows, payload) in merge(rows, self.p.pace.batch as usize) {
            metrics_sent += payload.metrics.len();
            self.cursor = rows.1;
            self.send_history(&device, rows, payload).await;
        }
        let wait = Duration::from_secs_f64(metrics_sent as f64 / f64::from(self.p.pace.rate));
        self.drain = Drain::Due(Instant::now() + wait);
    }

    async fn send_history(&mut self, device: &str, rows: Rows, payload: Payload) {
        let mut p = self.p.node.history(device, payload);
        metrics::get()
            .history
            .get_or_create(&labels("what", "sent"))
            .inc();
        match self.p.sink.link() {
            Some(l) => {
                // deleted on its PUBACK
                p.qos = Qos::AtLeastOnce;
                l.awaiting(rows);
                self.send(p).await;
            }
            None => {
                self.send(p).await;
                self.delete(rows).await;
            }
        }
    }
}

/// `fieldgate_sparkplug_history_total{what}` += `n`.
fn count_history(what: &str, n: u64) {
    metrics::get()
        .history
        .get_or_create(&labels("what", what))
        .inc_by(n);
}

/// Consecutive rows of one device merged into messages of at most `batch`
/// metrics (the payload timestamp of the first row; each metric keeps its
/// own), with the ids of the rows each carries.
fn merge(rows: Vec<Stored>, batch: usize) -> Vec<(String, Rows, Payload)> {
    let mut out: Vec<(String, Rows, Payload)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((d, ids, p))
                if *d == r.device && p.metrics.len() + r.payload.metrics.len() <= batch =>
            {
                p.metrics.extend(r.payload.metrics);
                ids.1 = r.id;
            }
            _ => out.push((r.device, (r.id, r.id), r.payload)),
        }
    }
    out
}
