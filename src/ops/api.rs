//! The JSON API behind the status page: `/api/v1/status` (everything the
//! page shows) and `/api/v1/devices/{name}` (one device). The page's live
//! updates carry the same `/api/v1/status` document.
//!
//! Owns the document shape (documented in docs/operations.md) and the rate
//! sampler. Reads only: the metrics leaf (the broker's and the uplink's
//! figures among them), [`crate::metrics::readings`], [`super::logring`]
//! the point catalogue and the broker's [`Clients`] port it is given; must
//! not change pipeline state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::logring;
use crate::metrics;
use crate::metrics::readings;
use crate::ports::Clients;
use crate::ports::points::DeviceSpec;
use crate::reading::{Quality, now_ms};

/// A value older than this many poll intervals is marked stale.
pub const STALE_POLLS: u32 = 3;
/// Stale threshold for devices without a poll interval, and the floor.
const STALE_NO_POLL: Duration = Duration::from_secs(300);
const STALE_FLOOR: Duration = Duration::from_secs(3);
/// Rates are computed over at least this much time.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    acked: u64,
    publish_in: u64,
    publish_out: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    acked: f64,
    publish_in: f64,
    publish_out: f64,
}

/// What the API reads from, built once at start.
pub struct Api {
    gateway: String,
    devices: Vec<DeviceSpec>,
    clients: Option<Arc<dyn Clients>>,
    /// last sample and the rates computed from it (only touched while
    /// someone asks: nothing runs when nobody looks)
    rates: Mutex<(Option<Sample>, Rates)>,
}

fn stale_after(d: &DeviceSpec) -> Duration {
    d.poll
        .map_or(STALE_NO_POLL, |p| (p * STALE_POLLS).max(STALE_FLOOR))
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Api {
    pub fn new(gateway: String, devices: Vec<DeviceSpec>) -> Api {
        Api {
            gateway,
            devices,
            clients: None,
            rates: Mutex::new((None, Rates::default())),
        }
    }

    /// Lists the broker's connected clients in the status document.
    pub fn with_clients(mut self, clients: Arc<dyn Clients>) -> Api {
        self.clients = Some(clients);
        self
    }

    fn rates(&self, now: Sample) -> Rates {
        let Ok(mut g) = self.rates.lock() else {
            return Rates::default();
        };
        match g.0 {
            None => g.0 = Some(now),
            Some(prev) => {
                let dt = now.at.duration_since(prev.at);
                if dt >= RATE_WINDOW {
                    let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt.as_secs_f64();
                    g.1 = Rates {
                        acked: per_s(now.acked, prev.acked),
                        publish_in: per_s(now.publish_in, prev.publish_in),
                        publish_out: per_s(now.publish_out, prev.publish_out),
                    };
                    g.0 = Some(now);
                }
            }
        }
        g.1
    }

    /// One device's document, `None` when no device has that name.
    pub fn device(&self, name: &str) -> Option<Json> {
        let spec = self.devices.iter().find(|d| d.name == name)?;
        Some(self.device_json(spec, now_ms()))
    }

    fn device_json(&self, d: &DeviceSpec, now: i64) -> Json {
        let health = metrics::get().devices().remove(&d.name);
        let last = readings::of_device(&d.name);
        let stale_ms = i64::try_from(stale_after(d).as_millis()).unwrap_or(i64::MAX);
        let mut last_ok: Option<i64> = None;
        let points: Vec<Json> = d
            .points
            .iter()
            .map(|p| match last.get(p.name.as_str()) {
                Some(r) => {
                    if r.quality == Quality::Good {
                        last_ok = last_ok.max(Some(r.ts));
                    }
                    let age = (now - r.ts).max(0);
                    json!({
                        "name": p.name,
                        "value": r.value.to_json(),
                        "unit": r.unit.as_deref().or(p.unit.as_deref()),
                        "quality": r.quality.as_str(),
                        "ts": r.ts,
                        "age_s": round(age as f64 / 1000.0),
                        "stale": age > stale_ms || r.quality != Quality::Good,
                        "writable": p.writable,
                    })
                }
                None => json!({
                    "name": p.name, "value": null, "unit": p.unit, "quality": null,
                    "ts": null, "age_s": null, "stale": true, "writable": p.writable,
                }),
            })
            .collect();
        let learned = health.as_ref().and_then(|h| h.learned.clone());
        json!({
            "name": d.name,
            "kind": d.kind,
            "state": health.as_ref().map_or("unknown", |h| h.state),
            "learned": learned,
            "error": health.and_then(|h| h.error),
            "last_ok_ts": last_ok,
            "stale_after_s": stale_ms / 1000,
            "points": points,
        })
    }

    /// The whole status document.
    pub fn status(&self) -> Json {
        let m = metrics::get();
        m.collect();
        let b = m.broker().unwrap_or_default();
        let now = now_ms();
        let rates = self.rates(Sample {
            at: Instant::now(),
            acked: m.uplink().map_or(0, |u| u.acked),
            publish_in: b.publish_received,
            publish_out: b.publish_sent,
        });
        let devices: Vec<Json> = self
            .devices
            .iter()
            .map(|d| self.device_json(d, now))
            .collect();
        let uplink = if let Some(u) = m.uplink() {
            let depth = u.outbox_depth;
            let drain = (rates.acked > 0.0).then(|| (depth as f64 / rates.acked).ceil());
            json!({
                "configured": true,
                "connected": u.connected,
                "outbox_depth": depth,
                "outbox_bytes": u.outbox_bytes,
                "oldest_age_s": u.oldest_age_s,
                "sent": u.sent,
                "acked": u.acked,
                "send_rate": round(rates.acked),
                "drain_eta_s": if depth == 0 { Some(0.0) } else { drain },
                // a full or failing disk, a set-aside outbox: what /healthz says
                "problem": m.outbox_problem(),
            })
        } else {
            json!({"configured": false})
        };
        json!({
            "gateway": self.gateway,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": m.uptime_secs(),
            "ts": now,
            "devices": devices,
            "uplink": uplink,
            "broker": {
                "clients": b.clients_connected,
                "publish_in_per_s": round(rates.publish_in),
                "publish_out_per_s": round(rates.publish_out),
                "dropped": b.publish_dropped,
                "retained": b.retained,
                "list": self.clients.as_ref().map(|c| c.clients()).unwrap_or_default(),
            },
            "warnings": logring::recent(),
        })
    }
}
