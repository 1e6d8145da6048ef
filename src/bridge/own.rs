//! The gateway's own publishes (rules, device status) on their way to the
//! local broker: those on forwarded topics at QoS 1/2 are committed to the
//! outbox first (within `buffer.commit_window`, several batches in one
//! commit), QoS 0 ones are sent live, and every publish then goes on to
//! the local broker, in order, once its batch is committed (the forward
//! entry is `route.rs`'s). With
//! write-behind (`behind.rs`) they go to the memory queue instead and on
//! to the local broker at once.
//!
//! Owns that task. Must not read the outbox or talk to the network.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::behind::{self, Behind};
use super::counters::Counters;
use super::outbox::{Commit, WriteCmd};
use super::route::Route;
use crate::log_throttle::LogThrottle;
use crate::reading::Publish;

/// The gateway's own publishes: commit (when forwarded), then publish locally.
pub(super) struct OwnPublishes {
    pub(super) route: Route,
    pub(super) writer: mpsc::Sender<WriteCmd>,
    pub(super) live: mpsc::Sender<Publish>,
    pub(super) local: mpsc::Sender<Publish>,
    pub(super) counters: Arc<Counters>,
    /// Write-behind: forwarded messages go to memory, not to the writer.
    pub(super) behind: Option<Arc<Behind>>,
}

/// Most publishes the intake commits in one batch.
const INTAKE_BATCH: usize = 4096;

/// Batches handed to the writer and not yet committed, at most: the
/// intake goes on taking publishes while a commit window runs.
const MAX_PENDING: usize = 8;

/// A batch on its way: the writer's answer (`None` when it was not
/// stored, nothing to wait for) and the publishes for the local broker.
type Pending = (Option<oneshot::Receiver<bool>>, Vec<Publish>);

impl OwnPublishes {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Publish>) {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut live_log = LogThrottle::new(Duration::from_secs(10));
        loop {
            tokio::select! {
                biased;
                // the oldest batch is committed (or handed to the live queue)
                _ = front_done(&mut pending), if !pending.is_empty() => {
                    if let Some((_, batch)) = pending.pop_front()
                        && !self.publish_locally(batch).await
                    {
                        return;
                    }
                }
                first = rx.recv(), if pending.len() < MAX_PENDING => {
                    let Some(first) = first else { break };
                    let mut batch = Vec::with_capacity(64);
                    batch.push(first);
                    while batch.len() < INTAKE_BATCH {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let done = self.store(&batch, &mut live_log).await;
                    pending.push_back((done, batch));
                }
            }
        }
        while let Some((done, batch)) = pending.pop_front() {
            if let Some(done) = done {
                let _ = done.await;
            }
            if !self.publish_locally(batch).await {
                return;
            }
        }
    }

    /// Hands the forwarded QoS 1/2 messages of `batch` to the writer (its
    /// commit window) and sends its QoS 0 ones live; the writer's answer.
    async fn store(
        &self,
        batch: &[Publish],
        live_log: &mut LogThrottle,
    ) -> Option<oneshot::Receiver<bool>> {
        let mut store = Vec::new();
        for p in batch {
            // the entry's QoS, whatever the publish's
            let Some((msg, _)) = self.route.message(&p.topic, &p.payload, 2, p.retain) else {
                continue;
            };
            if msg.qos == 0 {
                self.send_live(msg.to_publish(), live_log);
            } else {
                store.push(msg);
            }
        }
        if store.is_empty() {
            return None;
        }
        if let Some(behind) = &self.behind {
            // published locally at once; written only if not acknowledged in time
            let over = behind.push(store);
            if !over.is_empty() {
                behind::write(&self.writer, over, false).await;
            }
            return None;
        }
        let (done_tx, done_rx) = oneshot::channel();
        let cmd = WriteCmd::Insert {
            msgs: store,
            done: Some(done_tx),
            commit: Commit::Window,
        };
        match self.writer.send(cmd).await {
            // committed, or (failed commit) handed to the live queue
            Ok(()) => Some(done_rx),
            // the writer is gone: send live what it cannot store
            Err(e) => {
                if let WriteCmd::Insert { msgs, .. } = e.0 {
                    for m in &msgs {
                        self.send_live(m.to_publish(), live_log);
                    }
                }
                None
            }
        }
    }

    /// `false` when the local broker publisher is gone.
    async fn publish_locally(&self, batch: Vec<Publish>) -> bool {
        for p in batch {
            if self.local.send(p).await.is_err() {
                warn!("local broker publisher gone; the intake stops");
                return false;
            }
        }
        true
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

/// Waits for the writer's answer about the oldest pending batch.
async fn front_done(pending: &mut VecDeque<Pending>) {
    if let Some((Some(done), _)) = pending.front_mut() {
        let _ = done.await;
    }
}
