//! The bridge's figures in the metrics leaf: its [`Counters`] as the
//! collector the bridge registers at start (outbox depth, bytes and age,
//! messages sent, acknowledged and dropped per reason, the connection).
//!
//! Owns the mapping from counters to metric names only. Must not count
//! anything itself.

use std::sync::atomic::Ordering::Relaxed;

use super::Counters;
use crate::metrics::{Collector, Metrics, gauge, labels};

impl Collector for Counters {
    fn collect(&self, m: &Metrics) {
        m.outbox_depth.set(gauge(self.depth.load(Relaxed)));
        m.outbox_bytes.set(gauge(self.depth_bytes.load(Relaxed)));
        m.uplink_connected.set(gauge(self.connected.load(Relaxed)));
        let oldest = self.oldest_ms.load(Relaxed);
        let age_s = if oldest > 0 && self.depth.load(Relaxed) > 0 {
            (crate::reading::now_ms() - oldest).max(0) / 1000
        } else {
            0
        };
        m.outbox_oldest_age_seconds.set(age_s);
        m.uplink_sent
            .inner()
            .store(self.sent.load(Relaxed), Relaxed);
        m.uplink_acked
            .inner()
            .store(self.acked.load(Relaxed), Relaxed);
        m.outbox_errors
            .inner()
            .store(self.io_errors.load(Relaxed), Relaxed);
        m.uplink_dead
            .inner()
            .store(self.dead.load(Relaxed), Relaxed);
        for (reason, v) in [
            ("drop_oldest", &self.dropped_oldest),
            ("drop_newest", &self.dropped_newest),
            ("max_age", &self.expired),
            ("live_not_sent", &self.live_dropped),
        ] {
            m.uplink_dropped
                .get_or_create(&labels("reason", reason))
                .inner()
                .store(v.load(Relaxed), Relaxed);
        }
    }
}
