//! The bridge's metrics: the outbox and uplink figures, registered in the
//! metrics leaf when the bridge starts, and its [`Counters`] as the
//! collector that copies them in (and hands the leaf the
//! [`UplinkFigures`] health and the status page show).
//!
//! Owns the bridge's metric names. Must not count anything itself.

use std::sync::LazyLock;
use std::sync::atomic::Ordering::Relaxed;

use super::counters::Counters;
use crate::metrics::{
    Collector, Counter, CounterFamily, Gauge, Metrics, UplinkFigures, gauge, labels, mirror,
};

/// Every metric of the bridge (names prefixed `fieldgate_`).
pub(crate) struct BridgeMetrics {
    pub outbox_depth: Gauge,
    pub outbox_bytes: Gauge,
    pub outbox_oldest_age_seconds: Gauge,
    pub outbox_errors: Counter,
    pub outbox_set_aside: Counter,
    pub uplink_connected: Gauge,
    pub uplink_sent: Counter,
    pub uplink_acked: Counter,
    pub uplink_dropped: CounterFamily,
    pub uplink_dead: Counter,
    pub uplink_commands_dropped: Counter,
}

static METRICS: LazyLock<BridgeMetrics> = LazyLock::new(|| {
    let m = crate::metrics::get();
    BridgeMetrics {
        outbox_depth: m.register("outbox_depth", "Messages in the outbox", Gauge::default()),
        outbox_bytes: m.register(
            "outbox_bytes",
            "Payload and topic bytes in the outbox",
            Gauge::default(),
        ),
        outbox_oldest_age_seconds: m.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest outbox message",
            Gauge::default(),
        ),
        outbox_errors: m.register("outbox_errors", "Outbox I/O errors", Counter::default()),
        outbox_set_aside: m.register(
            "outbox_set_aside",
            "Broken outbox files renamed to outbox.db.corrupt-<time> at start",
            Counter::default(),
        ),
        uplink_connected: m.register(
            "uplink_connected",
            "1 while connected upstream",
            Gauge::default(),
        ),
        uplink_sent: m.register("uplink_sent", "Messages sent upstream", Counter::default()),
        uplink_acked: m.register(
            "uplink_acked",
            "Messages acknowledged by the upstream broker",
            Counter::default(),
        ),
        uplink_dropped: m.register(
            "uplink_dropped",
            "Messages dropped from the outbox",
            CounterFamily::default(),
        ),
        uplink_dead: m.register(
            "uplink_dead",
            "Messages moved to the outbox's dead-letter table",
            Counter::default(),
        ),
        uplink_commands_dropped: m.register(
            "uplink_commands_dropped",
            "Commands from upstream dropped (local queue full, too big, or during the stop)",
            Counter::default(),
        ),
    }
});

/// The bridge's metrics, registered at the first call (the bridge's start).
pub(crate) fn get() -> &'static BridgeMetrics {
    &METRICS
}

impl Collector for Counters {
    fn collect(&self, m: &Metrics) {
        let b = get();
        let depth = self.depth.load(Relaxed);
        let bytes = self.depth_bytes.load(Relaxed);
        let connected = self.connected.load(Relaxed);
        let oldest = self.oldest_ms.load(Relaxed);
        let age_s = if oldest > 0 && depth > 0 {
            (crate::reading::now_ms() - oldest).max(0) / 1000
        } else {
            0
        };
        b.outbox_depth.set(gauge(depth));
        b.outbox_bytes.set(gauge(bytes));
        b.uplink_connected.set(gauge(connected));
        b.outbox_oldest_age_seconds.set(age_s);
        let (sent, acked) = (self.sent.load(Relaxed), self.acked.load(Relaxed));
        mirror(&b.uplink_sent, sent);
        mirror(&b.uplink_acked, acked);
        mirror(&b.outbox_errors, self.io_errors.load(Relaxed));
        mirror(&b.uplink_dead, self.dead.load(Relaxed));
        mirror(
            &b.uplink_commands_dropped,
            self.commands_dropped.load(Relaxed),
        );
        for (reason, v) in [
            ("drop_oldest", &self.dropped_oldest),
            ("drop_newest", &self.dropped_newest),
            ("max_age", &self.expired),
            ("message_expiry", &self.message_expired),
            ("live_not_sent", &self.live_dropped),
            ("dead_letter_limit", &self.dead_pruned),
        ] {
            mirror(
                &b.uplink_dropped.get_or_create(&labels("reason", reason)),
                v.load(Relaxed),
            );
        }
        m.set_disk_problem(
            self.disk_problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        m.set_uplink(UplinkFigures {
            connected: connected == 1,
            outbox_depth: depth,
            outbox_bytes: bytes,
            oldest_age_s: age_s.max(0) as u64,
            sent,
            acked,
        });
    }
}
