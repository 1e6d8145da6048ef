//! The metrics leaf: process-wide metrics (Prometheus text via
//! prometheus-client), the device health behind `/healthz`, the
//! [`Collector`]s stages register. The last reading per point and its
//! history are the `recent` leaf's; the log throttle is `log_throttle`'s
//! (re-exported here as [`LogThrottle`] for `src/bridge/`, not moved yet).
//!
//! Owns the registry and the figures health reads ([`Metrics`]). Each
//! stage creates its own metrics and registers them here at start
//! ([`Metrics::register`], names prefixed `fieldgate_`); a stage whose
//! figures live in its own counters (the broker, the bridge) also
//! registers a [`Collector`], which copies them into its metrics whenever
//! the figures are read ([`Metrics::collect`]: the scrape, `/healthz`, the
//! status page, the systemd STATUS line). This module must import no stage
//! and hold no pipeline state beyond counters and gauges.

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};

/// A label set: `[("device", "boiler")]`.
pub type Labels = Vec<(String, String)>;

/// `[(key, value)]` as a label set.
pub fn labels(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// A counter per label set.
pub type CounterFamily = Family<Labels, Counter>;
/// A gauge per label set.
pub type GaugeFamily = Family<Labels, Gauge>;

/// The process-wide registry and the figures health reads.
///
/// The leaf itself owns only what is not any one stage's: the readings per
/// device and the device health (`readings`, `device_up`, set through
/// [`Metrics::set_device`]), the messages the gateway published (the
/// watchdog's sign of progress), the uplink's figures for `/healthz`, the
/// status page and the STATUS line ([`UplinkFigures`], set by the bridge's
/// collector), the broker's figures for the status page ([`BrokerFigures`],
/// set by the broker's collector), and the outbox problem. Every other metric belongs to a
/// stage, which creates it and [`Metrics::register`]s it at start.
pub struct Metrics {
    registry: Mutex<Registry>,
    started: Instant,
    /// readings handed to the rules stage, per device
    pub readings: CounterFamily,
    /// 1 when the device's last poll succeeded, per device
    pub device_up: GaugeFamily,
    /// messages published on the embedded broker by the gateway
    pub published: Counter,
    /// what is wrong with the outbox, for /healthz and the STATUS line
    outbox_problem: Mutex<Option<String>>,
    /// what is wrong with the outbox's disk now (set and cleared by the bridge)
    disk_problem: Mutex<Option<String>>,
    uplink: Mutex<Option<UplinkFigures>>,
    broker: Mutex<Option<BrokerFigures>>,
    devices: Mutex<BTreeMap<String, DeviceHealth>>,
    learned: Mutex<BTreeMap<String, String>>,
    collectors: Mutex<Vec<(&'static str, Arc<dyn Collector>)>>,
}

/// The uplink's figures as health and the status page show them (set by
/// the bridge's collector at every [`Metrics::collect`]; absent without an
/// uplink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkFigures {
    pub connected: bool,
    pub outbox_depth: u64,
    pub outbox_bytes: u64,
    pub oldest_age_s: u64,
    pub sent: u64,
    pub acked: u64,
}

/// The embedded broker's figures as the status page shows them (counts
/// since start; set by the broker's collector at every
/// [`Metrics::collect`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerFigures {
    pub clients_connected: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub retained: u64,
}

/// A stage's own figures, copied into its metrics whenever they are read.
pub trait Collector: Send + Sync {
    fn collect(&self, m: &Metrics);
}

/// `i64` for a gauge from a `u64` count (saturating).
pub fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sets a counter that mirrors a stage's own count.
pub fn mirror(c: &Counter, v: u64) {
    c.inner().store(v, std::sync::atomic::Ordering::Relaxed);
}

/// What `/healthz` says about one device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceHealth {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Limits the device taught (Modbus: largest read, holes), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<String>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("fieldgate")),
            started: Instant::now(),
            readings: CounterFamily::default(),
            device_up: GaugeFamily::default(),
            published: Counter::default(),
            outbox_problem: Mutex::new(None),
            disk_problem: Mutex::new(None),
            uplink: Mutex::new(None),
            broker: Mutex::new(None),
            devices: Mutex::new(BTreeMap::new()),
            learned: Mutex::new(BTreeMap::new()),
            collectors: Mutex::new(Vec::new()),
        };
        m.register(
            "readings",
            "Readings handed to the rules stage",
            m.readings.clone(),
        );
        m.register(
            "device_up",
            "1 when the device's last poll succeeded",
            m.device_up.clone(),
        );
        m.register(
            "published",
            "Messages the gateway published on the embedded broker",
            m.published.clone(),
        );
        m
    }

    /// Registers a stage's metric under `fieldgate_<name>` and hands it
    /// back. A stage keeps its metrics in a process-wide static, so each is
    /// registered once.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric.clone());
        metric
    }

    /// Records the uplink's figures (the bridge's collector).
    pub fn set_uplink(&self, f: UplinkFigures) {
        *self.uplink.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The uplink's figures as last collected; `None` without an uplink.
    pub fn uplink(&self) -> Option<UplinkFigures> {
        *self.uplink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the broker's figures (the broker's collector).
    pub fn set_broker(&self, f: BrokerFigures) {
        *self.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The broker's figures as last collected; `None` before the broker
    /// started.
    pub fn broker(&self) -> Option<BrokerFigures> {
        *self.broker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = encode(&mut s, &r);
        s
    }

    /// Records what is wrong with the outbox (shown until the process ends).
    pub fn set_outbox_problem(&self, problem: String) {
        *self
            .outbox_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(problem);
    }

    /// What is wrong with the outbox, if anything (a disk problem too).
    pub fn outbox_problem(&self) -> Option<String> {
        let lasting = self
            .outbox_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (lasting, self.disk_problem()) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        }
    }

    /// Records what is wrong with the outbox's disk now (`None`: nothing).
    pub fn set_disk_problem(&self, problem: Option<String>) {
        *self.disk_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// What is wrong with the outbox's disk now: `/healthz` answers 503.
    pub fn disk_problem(&self) -> Option<String> {
        self.disk_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers `c` as the collector of `stage`, replacing the one
    /// registered under that name before (a restarted stage).
    pub fn set_collector(&self, stage: &'static str, c: Arc<dyn Collector>) {
        if let Ok(mut cs) = self.collectors.lock() {
            cs.retain(|(name, _)| *name != stage);
            cs.push((stage, c));
        }
    }

    /// Asks every registered collector to copy its figures in.
    pub fn collect(&self) {
        let collectors = self
            .collectors
            .lock()
            .map(|cs| cs.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        for c in collectors {
            c.collect(self);
        }
    }

    /// Records a device's state (called with every status change).
    pub fn set_device(&self, device: &str, online: bool, error: Option<&str>) {
        self.device_up
            .get_or_create(&labels("device", device))
            .set(i64::from(online));
        let health = DeviceHealth {
            state: if online { "online" } else { "offline" },
            error: error.map(str::to_string),
            learned: None,
        };
        if let Ok(mut d) = self.devices.lock() {
            d.insert(device.to_string(), health);
        }
        crate::recent::mark_state(device, online);
    }

    /// Records what a device taught about its limits (empty: nothing).
    pub fn set_learned(&self, device: &str, summary: String) {
        let mut l = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if summary.is_empty() {
            l.remove(device);
        } else {
            l.insert(device.to_string(), summary);
        }
    }

    /// Devices by name with their last state.
    pub fn devices(&self) -> BTreeMap<String, DeviceHealth> {
        let mut d = self.devices.lock().map(|d| d.clone()).unwrap_or_default();
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        for (name, h) in d.iter_mut() {
            h.learned = learned.get(name).cloned();
        }
        d
    }

    /// Number of devices online / known.
    pub fn devices_online(&self) -> (usize, usize) {
        let d = self.devices();
        (d.values().filter(|h| h.state == "online").count(), d.len())
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Sum of the readings counter over all devices.
    pub fn readings_total(&self) -> u64 {
        self.devices()
            .keys()
            .map(|d| self.readings.get_or_create(&labels("device", d)).get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_labels() {
        let m = get();
        m.readings
            .get_or_create(&labels("device", "unit-test-dev"))
            .inc();
        m.set_device("unit-test-dev", true, None);
        let text = m.render();
        assert!(
            text.contains("fieldgate_readings_total{device=\"unit-test-dev\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fieldgate_device_up{device=\"unit-test-dev\"} 1"),
            "{text}"
        );
    }
}
