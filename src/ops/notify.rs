//! systemd notification: `READY=1` once the broker listens and sources run,
//! `STATUS=` with devices online, readings/s and outbox depth, `STOPPING=1`
//! on shutdown, and `WATCHDOG=1` pings only while the pipeline makes
//! progress, so a wedged gateway is restarted by systemd.
//!
//! Owns the notify protocol and the liveness rule. Must not change pipeline
//! state: it only looks at queue lengths and metrics. Without
//! `NOTIFY_SOCKET` every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc::WeakSender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the gateway is up.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("starting sources")]);
}

/// Tells systemd the gateway is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A bounded queue whose length the watchdog watches, without keeping the
/// channel open (it holds a weak sender).
pub struct Queue<T> {
    pub name: &'static str,
    pub sender: WeakSender<T>,
}

/// Something the watchdog can ask for a queue length.
pub trait QueueLen: Send + Sync {
    fn name(&self) -> &'static str;
    /// `None` once the channel is closed.
    fn queued(&self) -> Option<usize>;
}

impl<T: Send + 'static> QueueLen for Queue<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn queued(&self) -> Option<usize> {
        self.sender
            .upgrade()
            .map(|s| s.max_capacity() - s.capacity())
    }
}

/// The readings channel (bounded in readings), watched like [`Queue`].
pub struct ReadingsQueue {
    pub name: &'static str,
    pub sender: crate::reading::batch::WeakReadingsSender,
}

impl QueueLen for ReadingsQueue {
    fn name(&self) -> &'static str {
        self.name
    }
    fn queued(&self) -> Option<usize> {
        self.sender.queued()
    }
}

/// The liveness rule: the pipeline is stuck when some queue holds messages
/// and no message was published since the previous check.
pub fn stuck(
    queues: &[Box<dyn QueueLen>],
    published_before: u64,
    published_now: u64,
) -> Option<&'static str> {
    if published_now != published_before {
        return None;
    }
    queues
        .iter()
        .find(|q| q.queued().is_some_and(|n| n > 0))
        .map(|q| q.name())
}

/// Updates `STATUS=` every interval and pings the watchdog (if systemd set
/// `WATCHDOG_USEC`) at half its period while the pipeline is not stuck.
pub async fn run(queues: Vec<Box<dyn QueueLen>>, cancel: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(5));
    let m = metrics::get();
    let mut published = m.published.get();
    let mut readings = m.readings_total();
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        m.collect();
        let now_published = m.published.get();
        let now_readings = m.readings_total();
        let (online, total) = m.devices_online();
        let rate = (now_readings - readings.min(now_readings)) as f64 / period.as_secs_f64();
        let mut status = format!(
            "{online}/{total} devices online, {rate:.1} readings/s, outbox {}",
            m.uplink().map_or(0, |u| u.outbox_depth)
        );
        if let Some(problem) = m.outbox_problem() {
            status.push_str("; ");
            status.push_str(&problem);
        }
        match stuck(&queues, published, now_published) {
            Some(q) => {
                warn!(
                    queue = q,
                    "pipeline made no progress; withholding the watchdog ping"
                );
                send(&[NotifyState::Status(&format!("stuck at {q}; {status}"))]);
            }
            None if watchdog.is_some() => {
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)])
            }
            None => send(&[NotifyState::Status(&status)]),
        }
        published = now_published;
        readings = now_readings;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stuck_only_when_a_queue_holds_messages_without_progress() {
        let (tx, _rx) = tokio::sync::mpsc::channel::<u8>(4);
        let queues: Vec<Box<dyn QueueLen>> = vec![Box::new(Queue {
            name: "publish",
            sender: tx.downgrade(),
        })];
        assert_eq!(stuck(&queues, 5, 5), None, "empty queue, idle pipeline");
        tx.send(1).await.unwrap();
        assert_eq!(stuck(&queues, 5, 6), None, "progress was made");
        assert_eq!(stuck(&queues, 6, 6), Some("publish"));
        drop(tx);
        assert_eq!(stuck(&queues, 6, 6), None, "closed channel");
    }
}
