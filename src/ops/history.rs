//! The history documents of the status page and its JSON API: one point's
//! hour (`/api/v1/devices/{device}/points/{point}/history`, also as CSV),
//! every point's trend and every device's hour for the page
//! (`/api/v1/history`), the uplink's hour (`/api/v1/uplink/history`) and
//! the broker's clients (`/api/v1/clients`).
//!
//! Owns the documents' shapes (documented in docs/operations.md). Reads the
//! metrics leaf's history ([`crate::metrics::readings`]), the uplink trend
//! ([`super::trend`]) and the [`Clients`] port; must not change pipeline
//! state.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::trend::UplinkTrend;
use crate::metrics::readings::{self, PointHistory};
use crate::metrics::{Collector, Gauge, Metrics, gauge, history};
use crate::ports::Clients;
use crate::ports::points::DeviceSpec;

/// What the history documents read from, built once at start.
pub struct Histories {
    pub devices: Vec<DeviceSpec>,
    pub uplink: Option<Arc<UplinkTrend>>,
    pub clients: Option<Arc<dyn Clients>>,
}

/// Why a point's history is not there.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Missing {
    #[error("no device named {0:?}")]
    Device(String),
    #[error("device {0:?} has no point named {1:?}")]
    Point(String, String),
}

/// Readings and buckets older than the window (a device silent for longer
/// than `http.history`) are left out.
fn oldest() -> i64 {
    history::shape().map_or(i64::MIN, |s| {
        crate::reading::now_ms() - s.bucket_ms * s.buckets as i64
    })
}

fn series_json(h: &PointHistory) -> Json {
    let oldest = oldest();
    let raw: Vec<Json> = h
        .raw
        .iter()
        .filter(|(t, _)| *t >= oldest)
        .map(|(t, v)| json!([t, v]))
        .collect();
    let buckets: Vec<Json> = h
        .buckets
        .iter()
        .filter(|(t, _)| *t >= oldest)
        .map(|(t, v)| match v {
            Some([min, avg, max]) => json!([t, min, avg, max]),
            None => json!([t, null, null, null]),
        })
        .collect();
    let mut j = json!({"raw": raw, "buckets": buckets});
    if !h.texts.is_empty() {
        j["changes"] = h.texts.iter().map(|(t, s)| json!([t, s])).collect();
    }
    j
}

/// The window's shape for documents: since, bucket and span in seconds.
fn window() -> Json {
    let shape = history::shape();
    json!({
        "since": history::since_ms(),
        "bucket_s": shape.map(|s| s.bucket_ms / 1000),
        "span_s": shape.map(|s| s.bucket_ms / 1000 * s.buckets as i64),
    })
}

impl Histories {
    /// One point's history, for a configured point or one that sent
    /// readings.
    pub fn point(&self, device: &str, point: &str) -> Result<(Json, PointHistory), Missing> {
        let spec = self.devices.iter().find(|d| d.name == device);
        let recorded = readings::history_of(device);
        if spec.is_none() && recorded.is_empty() {
            return Err(Missing::Device(device.into()));
        }
        let pspec = spec.and_then(|d| d.points.iter().find(|p| p.name == point));
        let h = match recorded.into_iter().find(|(n, _)| &**n == point) {
            Some((_, h)) => h,
            None if pspec.is_some() => PointHistory::default(),
            None => return Err(Missing::Point(device.into(), point.into())),
        };
        let unit = readings::of_device(device)
            .get(point)
            .and_then(|l| l.unit.as_deref().map(str::to_string))
            .or_else(|| pspec.and_then(|p| p.unit.clone()));
        let mut j = series_json(&h);
        j["unit"] = json!(unit);
        j["window"] = window();
        Ok((j, h))
    }

    /// Every configured device: its hour and its points' trends.
    pub fn all(&self) -> Json {
        let devices: Vec<Json> = self
            .devices
            .iter()
            .map(|d| {
                let trail: Vec<Json> = readings::trail_of(&d.name)
                    .iter()
                    .filter(|b| b.start >= oldest())
                    .map(|b| {
                        json!([
                            b.start,
                            b.readings,
                            b.bad,
                            b.offline_ms,
                            b.polls,
                            b.poll_ms,
                            b.requests,
                            b.errors
                        ])
                    })
                    .collect();
                let mut points = serde_json::Map::new();
                for (name, h) in readings::history_of(&d.name) {
                    points.insert(name.to_string(), series_json(&h));
                }
                json!({
                    "name": d.name,
                    "poll_s": d.poll.map(|p| p.as_secs_f64()),
                    "trail": trail,
                    "points": points,
                })
            })
            .collect();
        json!({"window": window(), "devices": devices})
    }

    /// The uplink's hour; `{"configured": false}` without an uplink.
    pub fn uplink(&self) -> Json {
        match &self.uplink {
            Some(t) if crate::metrics::get().uplink().is_some() => {
                let mut j = t.json();
                j["configured"] = json!(true);
                j
            }
            _ => json!({"configured": false}),
        }
    }

    /// The broker's connected clients.
    pub fn clients(&self) -> Json {
        let list = self
            .clients
            .as_ref()
            .map(|c| c.clients())
            .unwrap_or_default();
        json!({"clients": list})
    }
}

/// `fieldgate_history_bytes`: what the points' history buffers hold,
/// set at every collect.
struct HistoryBytes(Gauge);

impl Collector for HistoryBytes {
    fn collect(&self, _: &Metrics) {
        self.0.set(gauge(readings::history_bytes() as u64));
    }
}

/// Registers `fieldgate_history_bytes` and its collector (once).
pub fn register_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let m = crate::metrics::get();
        let g = m.register(
            "history_bytes",
            "Bytes the status page's point history holds in memory",
            Gauge::default(),
        );
        m.set_collector("history", Arc::new(HistoryBytes(g)));
    });
}

/// A point's history as CSV: one row per bucket, then one per raw reading
/// (`ts_ms,time_utc,kind,min,avg,max`; a raw reading's value in all three,
/// a gap empty).
pub fn csv(h: &PointHistory) -> String {
    let mut out = String::from("ts_ms,time_utc,kind,min,avg,max\n");
    let time = |ts: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    };
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for (ts, v) in &h.buckets {
        let [a, b, c] = v.map_or([None; 3], |v| v.map(Some));
        let _ = writeln!(
            out,
            "{ts},{},bucket,{},{},{}",
            time(*ts),
            cell(a),
            cell(b),
            cell(c)
        );
    }
    for (ts, v) in &h.raw {
        let v = cell(*v);
        let _ = writeln!(out, "{ts},{},raw,{v},{v},{v}", time(*ts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_buckets_then_raw_readings_and_gaps_empty() {
        let h = PointHistory {
            raw: vec![(1_000, Some(2.5)), (2_000, None)],
            buckets: vec![(0, Some([1.0, 2.0, 3.0])), (30_000, None)],
            texts: vec![],
        };
        assert_eq!(
            csv(&h),
            "ts_ms,time_utc,kind,min,avg,max\n\
             0,1970-01-01T00:00:00.000Z,bucket,1,2,3\n\
             30000,1970-01-01T00:00:30.000Z,bucket,,,\n\
             1000,1970-01-01T00:00:01.000Z,raw,2.5,2.5,2.5\n\
             2000,1970-01-01T00:00:02.000Z,raw,,,\n"
        );
    }
}
