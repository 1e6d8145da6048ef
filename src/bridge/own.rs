//! The gateway's own publishes (rules, device status) on their way to the
//! local broker: those on forwarded topics at QoS 1/2 are committed to the
//! outbox first (one insert per batch of whatever queued), QoS 0 ones are
//! sent live, and every publish then goes on to the local broker.
//!
//! Owns that task. Must not read the outbox or talk to the network.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::config::UplinkConfig;
use super::outbox::{NewMessage, WriteCmd};
use super::{Counters, INTAKE_BATCH};
use crate::metrics::LogThrottle;
use crate::reading::Publish;

/// The gateway's own publishes: commit (when forwarded), then publish locally.
pub(super) struct Intake {
    pub(super) cfg: Arc<UplinkConfig>,
    pub(super) status_topic: String,
    pub(super) writer: mpsc::Sender<WriteCmd>,
    pub(super) live: mpsc::Sender<Publish>,
    pub(super) local: mpsc::Sender<Publish>,
    pub(super) counters: Arc<Counters>,
}

impl Intake {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Publish>) {
        let mut batch = Vec::with_capacity(64);
        let mut live_log = LogThrottle::new(Duration::from_secs(10));
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < INTAKE_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let mut store = Vec::new();
            for p in &batch {
                let rule = if p.topic == self.status_topic {
                    None
                } else {
                    self.cfg.forward_rule(&p.topic)
                };
                let Some(rule) = rule else { continue };
                let up = Publish {
                    topic: format!("{}{}", rule.prefix, p.topic),
                    payload: p.payload.clone(),
                    qos: rule.qos,
                    retain: p.retain,
                };
                if rule.qos.as_u8() == 0 {
                    self.send_live(up, &mut live_log);
                } else {
                    store.push(NewMessage {
                        topic: up.topic,
                        payload: up.payload,
                        qos: up.qos.as_u8(),
                        retain: up.retain,
                    });
                }
            }
            if !store.is_empty() {
                let (done_tx, done_rx) = oneshot::channel();
                let sent = self
                    .writer
                    .send(WriteCmd::Insert {
                        msgs: store,
                        done: Some(done_tx),
                    })
                    .await;
                match sent {
                    // committed, or (failed commit) handed to the live queue
                    Ok(()) => {
                        let _ = done_rx.await;
                    }
                    // the writer is gone: send live what it cannot store
                    Err(e) => {
                        if let WriteCmd::Insert { msgs, .. } = e.0 {
                            for m in &msgs {
                                self.send_live(m.to_publish(), &mut live_log);
                            }
                        }
                    }
                }
            }
            for p in batch.drain(..) {
                if self.local.send(p).await.is_err() {
                    warn!("local broker publisher gone; the intake stops");
                    return;
                }
            }
        }
    }

    fn send_live(&self, p: Publish, log: &mut LogThrottle) {
        if self.live.try_send(p).is_err() {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            if let Some(suppressed) = log.ready() {
                warn!(
                    suppressed_logs = suppressed,
                    "uplink live queue full: message dropped"
                );
            }
        }
    }
}
