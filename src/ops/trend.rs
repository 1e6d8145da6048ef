//! The uplink's history for the status page: the outbox depth and the
//! messages acknowledged upstream, sampled every [`STEP`] from the metrics
//! leaf's `UplinkFigures` over `http.history`, and the times the uplink went
//! down and came back.
//!
//! Owns the sampler task and its ring (bounded: `history / STEP` samples
//! of 32 bytes, [`MAX_EVENTS`] events; in memory only, a restart starts
//! empty). Reads figures only: must not change pipeline state or import
//! another stage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, UplinkFigures};
use crate::reading::now_ms;

/// How often the uplink is sampled.
pub const STEP: Duration = Duration::from_secs(2);
/// Down / up events kept (oldest dropped first).
pub const MAX_EVENTS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: i64,
    depth: u64,
    acked: u64,
    connected: bool,
}

/// The uplink's samples and events.
pub struct UplinkTrend {
    span_ms: i64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    samples: VecDeque<Sample>,
    /// (ms, connected after it)
    events: VecDeque<(i64, bool)>,
}

impl UplinkTrend {
    pub fn new(span: Duration) -> UplinkTrend {
        UplinkTrend {
            span_ms: i64::try_from(span.as_millis()).unwrap_or(i64::MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.span_ms / STEP.as_millis() as i64).unwrap_or(1) + 1
    }

    /// Adds one sample taken at `ts`.
    pub fn add(&self, ts: i64, u: UplinkFigures) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let was = g.samples.back().map(|s| s.connected);
        if was.is_some_and(|c| c != u.connected) || (was.is_none() && !u.connected) {
            if g.events.len() == MAX_EVENTS {
                g.events.pop_front();
            }
            g.events.push_back((ts, u.connected));
        }
        if g.samples.len() >= self.capacity() {
            g.samples.pop_front();
        }
        g.samples.push_back(Sample {
            ts,
            depth: u.outbox_depth,
            acked: u.acked,
            connected: u.connected,
        });
    }

    /// `{"step_s", "samples": [[ts, depth, acked per s, connected]], "events": [[ts, "down"|"up"]]}`.
    pub fn json(&self) -> Json {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = now_ms() - self.span_ms;
        let mut prev: Option<Sample> = None;
        let mut samples = Vec::with_capacity(g.samples.len());
        for s in g.samples.iter().filter(|s| s.ts >= oldest) {
            let rate = prev.map_or(0.0, |p| {
                let dt = (s.ts - p.ts).max(1) as f64 / 1000.0;
                (s.acked.saturating_sub(p.acked) as f64 / dt * 10.0).round() / 10.0
            });
            samples.push(json!([s.ts, s.depth, rate, s.connected]));
            prev = Some(*s);
        }
        let events: Vec<Json> = g
            .events
            .iter()
            .filter(|e| e.0 >= oldest)
            .map(|(ts, up)| json!([ts, if *up { "up" } else { "down" }]))
            .collect();
        json!({"step_s": STEP.as_secs(), "samples": samples, "events": events})
    }
}

/// Samples the uplink every [`STEP`] until `cancel` (nothing is kept
/// without an uplink).
pub async fn run(trend: std::sync::Arc<UplinkTrend>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let m = metrics::get();
        m.collect();
        if let Some(u) = m.uplink() {
            trend.add(now_ms(), u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(connected: bool, depth: u64, acked: u64) -> UplinkFigures {
        UplinkFigures {
            connected,
            outbox_depth: depth,
            acked,
            ..Default::default()
        }
    }

    #[test]
    fn samples_rates_and_the_times_the_uplink_went_down_and_came_back() {
        let t = UplinkTrend::new(Duration::from_secs(3600));
        let now = now_ms();
        t.add(now - 6000, fig(true, 0, 100));
        t.add(now - 4000, fig(false, 5, 110));
        t.add(now - 2000, fig(true, 7, 110));
        t.add(now, fig(true, 0, 120));
        let j = t.json();
        assert_eq!(j["samples"][0], json!([now - 6000, 0, 0.0, true]));
        assert_eq!(j["samples"][1], json!([now - 4000, 5, 5.0, false]));
        assert_eq!(j["samples"][3], json!([now, 0, 5.0, true]));
        assert_eq!(
            j["events"],
            json!([[now - 4000, "down"], [now - 2000, "up"]])
        );
    }

    #[test]
    fn an_hour_of_samples_at_most() {
        let t = UplinkTrend::new(Duration::from_secs(60));
        let now = now_ms();
        for i in 0..100 {
            t.add(now - 200_000 + i * 2000, fig(true, 1, 1));
        }
        assert_eq!(t.inner.lock().unwrap().samples.len(), 31);
    }
}
