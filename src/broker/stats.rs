//! The broker's counters and gauges: what `$SYS/broker/...` and `/metrics`
//! report. Plain atomics, written by connections and the router, read by
//! [`super::sys`] and the ops stage through [`Stats::snapshot`].
//! Must not know about sessions or sockets.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::limits::Hits;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    pub clients_connected: AtomicU64,
    pub clients_maximum: AtomicU64,
    /// Persistent sessions whose client is not connected.
    pub clients_disconnected: AtomicU64,
    /// Every packet read / written.
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    /// Messages not delivered to a subscriber (see `docs/design.md`).
    pub publish_dropped: AtomicU64,
    /// PUBLISHes refused by the ACL (acknowledged and dropped).
    pub publish_denied: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub retained: AtomicU64,
    pub subscriptions: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Connection tasks that panicked (each closed that connection only).
    pub panics: AtomicU64,
    /// CONNECTs refused, any CONNACK code.
    pub refused: AtomicU64,
    /// Bytes of the persistent sessions' message rows in the store.
    pub store_bytes: AtomicU64,
    /// Bytes (topic + payload) of the retained messages.
    pub retained_bytes: AtomicU64,
    /// Persistent sessions removed after their expiry.
    pub sessions_expired: AtomicU64,
    /// Messages dropped because their Message Expiry Interval passed.
    pub messages_expired: AtomicU64,
    /// Messages a shared subscription member left unacknowledged when its
    /// session ended, handed to another member.
    pub shared_redelivered: AtomicU64,
    /// MQTT 5 clients connected now.
    pub clients_v5: AtomicU64,
    /// Each limit's hits.
    pub limits: Hits,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub uptime_secs: u64,
    pub clients_connected: u64,
    pub clients_maximum: u64,
    pub clients_disconnected: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub publish_denied: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub retained: u64,
    pub subscriptions: u64,
    pub protocol_errors: u64,
    pub panics: u64,
    pub refused: u64,
    /// Filled by the handle: store commits that failed after retries.
    pub store_failed_commits: u64,
    pub store_bytes: u64,
    pub retained_bytes: u64,
    pub sessions_expired: u64,
    pub messages_expired: u64,
    pub shared_redelivered: u64,
    pub clients_v5: u64,
}

impl Default for Stats {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Stats {
            started: Instant::now(),
            clients_connected: z(),
            clients_maximum: z(),
            clients_disconnected: z(),
            messages_received: z(),
            messages_sent: z(),
            publish_received: z(),
            publish_sent: z(),
            publish_dropped: z(),
            publish_denied: z(),
            bytes_received: z(),
            bytes_sent: z(),
            retained: z(),
            subscriptions: z(),
            protocol_errors: z(),
            panics: z(),
            refused: z(),
            store_bytes: z(),
            retained_bytes: z(),
            sessions_expired: z(),
            messages_expired: z(),
            shared_redelivered: z(),
            clients_v5: z(),
            limits: Hits::default(),
        }
    }
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Takes one off a gauge, never below 0 (a connection that ends while a
/// takeover is under way must not wrap it).
pub fn dec(c: &AtomicU64) {
    let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
}

impl Stats {
    pub fn connected(&self) {
        let now = self.clients_connected.fetch_add(1, Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            clients_connected: g(&self.clients_connected),
            clients_maximum: g(&self.clients_maximum),
            clients_disconnected: g(&self.clients_disconnected),
            messages_received: g(&self.messages_received),
            messages_sent: g(&self.messages_sent),
            publish_received: g(&self.publish_received),
            publish_sent: g(&self.publish_sent),
            publish_dropped: g(&self.publish_dropped),
            publish_denied: g(&self.publish_denied),
            bytes_received: g(&self.bytes_received),
            bytes_sent: g(&self.bytes_sent),
            retained: g(&self.retained),
            subscriptions: g(&self.subscriptions),
            protocol_errors: g(&self.protocol_errors),
            panics: g(&self.panics),
            refused: g(&self.refused),
            store_failed_commits: 0,
            store_bytes: g(&self.store_bytes),
            retained_bytes: g(&self.retained_bytes),
            sessions_expired: g(&self.sessions_expired),
            messages_expired: g(&self.messages_expired),
            shared_redelivered: g(&self.shared_redelivered),
            clients_v5: g(&self.clients_v5),
        }
    }
}
