//! The node's task: takes readings (from the tap), device status, STATE
//! and commands (from its in-process subscription on the embedded broker),
//! runs them through the [`Node`] and carries out what it asks: publishes
//! on the target broker, stores history, hands writes to the `.../set`
//! path, paces the history drain, advances bdSeq per session, and sends
//! NDEATH when the sources have stopped.
//!
//! Owns the loop and the drain's pacing. Must not build payloads (the node
//! and `encode.rs` do) nor talk to devices.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::history::History;
use super::host::HostWatch;
use super::metrics;
use super::node::{Node, Out, Phase};
use super::payload::Payload;
use super::seq::BdSeq;
use crate::broker::{BrokerHandle, Message};
use crate::metrics::labels;
use crate::reading::{Publish, Qos, Reading, now_ms};

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
    pub handle: BrokerHandle,
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
    status_prefix: String,
}

/// Runs the node until `readings` closes (the sources have stopped), then
/// sends NDEATH when births were sent.
pub async fn run(
    parts: Parts,
    mut readings: mpsc::Receiver<Vec<Reading>>,
    mut messages: mpsc::Receiver<Message>,
) {
    let status_prefix = format!("{}/status/", parts.gateway);
    let mut t = Task {
        p: parts,
        drain: Drain::Idle,
        status_prefix,
    };
    if t.p.host.is_none() {
        t.go_live().await;
    }
    loop {
        let due = match t.drain {
            Drain::Due(at) => Some(at),
            Drain::Idle => None,
        };
        tokio::select! {
            batch = readings.recv() => match batch {
                Some(b) => {
                    let out = t.p.node.on_readings(&b, now_ms());
                    t.carry_out(out).await;
                }
                None => break,
            },
            Some(m) = messages.recv() => t.on_message(m).await,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                t.drain_step().await;
            }
        }
    }
    if t.p.node.phase() == Phase::Live {
        let death = t.p.node.ndeath(now_ms());
        t.send(death).await;
        info!(
            bd_seq = t.p.node.bd_seq(),
            "Sparkplug NDEATH sent (clean stop)"
        );
    }
}

impl Task {
    /// Births with this session's bdSeq, then the stored history drains.
    async fn go_live(&mut self) {
        let out = self.p.node.births(self.p.bd_seq.current(), now_ms());
        self.carry_out(out).await;
        info!(bd_seq = self.p.bd_seq.current(), "Sparkplug births sent");
        if self.p.history.is_some() {
            self.drain = Drain::Due(Instant::now());
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
        if !self.p.handle.publish(p).await {
            warn!("Sparkplug publish with an invalid topic dropped");
        }
    }

    async fn store(&mut self, device: &str, payload: &Payload) {
        let what = match &mut self.p.history {
            Some(h) => match h.push(device, payload).await {
                Ok(()) => "stored",
                Err(e) => {
                    warn!(error = %e, "Sparkplug history not stored; the DDATA is lost");
                    "lost"
                }
            },
            None => "lost",
        };
        metrics::get()
            .history
            .get_or_create(&labels("what", what))
            .inc();
    }

    async fn on_message(&mut self, m: Message) {
        let now = now_ms();
        if let Some(device) = m.topic.strip_prefix(self.status_prefix.as_str()) {
            let online = serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["state"] == "online");
            let out = self.p.node.on_status(device, online, now);
            self.carry_out(out).await;
            return;
        }
        if self.p.state_topic.as_deref() == Some(&*m.topic) {
            self.on_state(&m.payload).await;
            return;
        }
        let (out, problems) = self.p.node.on_command(&m.topic, &m.payload, now);
        for p in problems {
            warn!(topic = %m.topic, "{p}");
            metrics::get()
                .commands_refused
                .get_or_create(&labels("reason", "refused"))
                .inc();
        }
        self.carry_out(out).await;
    }

    /// The primary host's STATE: online -> births (and the drain); offline
    /// -> NDEATH, a new bdSeq for the next session, data stored.
    async fn on_state(&mut self, payload: &[u8]) {
        let Some(watch) = &mut self.p.host else {
            return;
        };
        match watch.on_state(payload) {
            Some(true) if self.p.node.phase() == Phase::Waiting => self.go_live().await,
            Some(false) if self.p.node.phase() == Phase::Live => {
                let out = self.p.node.host_offline(now_ms());
                self.carry_out(out).await;
                self.drain = Drain::Idle;
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
    /// metrics each, consecutive rows of one device merged), deletes them,
    /// and sets the next step after as long as `pace.rate` asks for.
    async fn drain_step(&mut self) {
        self.drain = Drain::Idle;
        if self.p.node.phase() != Phase::Live {
            return;
        }
        let Some(h) = &mut self.p.history else {
            return;
        };
        let rows = match h.oldest(self.p.pace.batch).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Sparkplug history could not be read; retrying in 1 s");
                self.drain = Drain::Due(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        let Some(last) = rows.last().map(|r| r.id) else {
            info!("Sparkplug history sent");
            return;
        };
        let mut metrics_sent = 0usize;
        for (device, payload) in merge(rows, self.p.pace.batch as usize) {
            metrics_sent += payload.metrics.len();
            let p = self.p.node.history(&device, payload);
            self.send(p).await;
            metrics::get()
                .history
                .get_or_create(&labels("what", "sent"))
                .inc();
        }
        if let Some(h) = &mut self.p.history
            && let Err(e) = h.delete_through(last).await
        {
            warn!(error = %e, "sent Sparkplug history could not be deleted; it may be sent again");
        }
        let wait = Duration::from_secs_f64(metrics_sent as f64 / f64::from(self.p.pace.rate));
        self.drain = Drain::Due(Instant::now() + wait);
    }
}

/// Consecutive rows of one device merged into messages of at most `batch`
/// metrics (the payload timestamp of the first row; each metric keeps its
/// own).
fn merge(rows: Vec<super::history::Stored>, batch: usize) -> Vec<(String, Payload)> {
    let mut out: Vec<(String, Payload)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((d, p))
                if *d == r.device && p.metrics.len() + r.payload.metrics.len() <= batch =>
            {
                p.metrics.extend(r.payload.metrics);
            }
            _ => out.push((r.device, r.payload)),
        }
    }
    out
}
