//! The metrics leaf: process-wide metrics (Prometheus text via
//! prometheus-client), the device health behind `/healthz`, the
//! [`Collector`]s stages register, and the one throttle for repeated log
//! lines ([`LogThrottle`]).
//!
//! Owns the metric names and the registry. Stages record into [`get()`]
//! as things happen; a stage whose figures live in its own counters (the
//! broker, the bridge) registers a [`Collector`] at start, which copies
//! them in whenever the figures are read ([`Metrics::collect`]: the
//! scrape, `/healthz`, the systemd STATUS line). This module must import
//! no stage and hold no pipeline state beyond counters and gauges.
//! Metric names (all prefixed `fieldgate_`): see [`Metrics`].

pub mod readings;
mod throttle;

pub use throttle::LogThrottle;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set: `[("device", "boiler")]`.
pub type Labels = Vec<(String, String)>;

/// `[(key, value)]` as a label set.
pub fn labels(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

type CounterFamily = Family<Labels, Counter>;
type GaugeFamily = Family<Labels, Gauge>;

/// Every metric fieldgate exports.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// readings handed to the rules stage, per device
    pub readings: CounterFamily,
    /// 1 when the device's last poll succeeded, per device
    pub device_up: GaugeFamily,
    /// Modbus requests sent / failed / timed out, per device
    pub modbus_requests: CounterFamily,
    pub modbus_errors: CounterFamily,
    pub modbus_timeouts: CounterFamily,
    /// script errors (compile at reload, or run time), per script
    pub rule_errors: CounterFamily,
    /// serial bytes discarded (garbage, oversized frames), per device
    pub serial_discarded_bytes: CounterFamily,
    /// decoder errors, per device
    pub decode_errors: CounterFamily,
    /// messages published on the embedded broker by the gateway
    pub published: Counter,
    /// publishes dropped before the broker, per reason
    pub publish_dropped: CounterFamily,
    /// connections open on the embedded broker
    pub broker_connections: Gauge,
    /// panics caught in broker threads and listener restarts after them
    pub broker_panics: Gauge,
    pub broker_dropped: Gauge,
    pub broker_protocol_errors: Gauge,
    pub broker_publish_denied: Gauge,
    pub broker_store_failed_commits: Gauge,
    /// outbox: messages, bytes, age of the oldest message in seconds
    pub outbox_depth: Gauge,
    pub outbox_bytes: Gauge,
    pub outbox_oldest_age_seconds: Gauge,
    /// uplink: messages sent, acknowledged, dropped (per reason), errors
    pub uplink_sent: Counter,
    pub uplink_acked: Counter,
    pub uplink_dropped: CounterFamily,
    pub outbox_errors: Counter,
    /// 1 while the upstream connection is up
    pub uplink_connected: Gauge,
    /// messages the uplink gave up on (moved to the dead-letter table)
    pub uplink_dead: Counter,
    /// broken outbox files set aside at start
    pub outbox_set_aside: Counter,
    /// what is wrong with the outbox, for /healthz and the STATUS line
    outbox_problem: Mutex<Option<String>>,
    devices: Mutex<BTreeMap<String, DeviceHealth>>,
    collectors: Mutex<Vec<(&'static str, Arc<dyn Collector>)>>,
}

/// A stage's own figures, copied into [`Metrics`] whenever they are read.
pub trait Collector: Send + Sync {
    fn collect(&self, m: &Metrics);
}

/// `i64` for a gauge from a `u64` count (saturating).
pub fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What `/healthz` says about one device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceHealth {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

macro_rules! reg {
    ($r:expr, $name:literal, $help:literal, $m:expr) => {{
        let m = $m;
        $r.register($name, $help, m.clone());
        m
    }};
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("fieldgate");
        Metrics {
            readings: reg!(
                r,
                "readings",
                "Readings handed to the rules stage",
                CounterFamily::default()
            ),
            device_up: reg!(
                r,
                "device_up",
                "1 when the device's last poll succeeded",
                GaugeFamily::default()
            ),
            modbus_requests: reg!(
                r,
                "modbus_requests",
                "Modbus requests sent",
                CounterFamily::default()
            ),
            modbus_errors: reg!(
                r,
                "modbus_errors",
                "Modbus requests that failed",
                CounterFamily::default()
            ),
            modbus_timeouts: reg!(
                r,
                "modbus_timeouts",
                "Modbus requests that timed out",
                CounterFamily::default()
            ),
            rule_errors: reg!(
                r,
                "rule_errors",
                "Rule script errors",
                CounterFamily::default()
            ),
            serial_discarded_bytes: reg!(
                r,
                "serial_discarded_bytes",
                "Serial bytes discarded",
                CounterFamily::default()
            ),
            decode_errors: reg!(
                r,
                "decode_errors",
                "Serial decoder errors",
                CounterFamily::default()
            ),
            published: reg!(
                r,
                "published",
                "Messages the gateway published on the embedded broker",
                Counter::default()
            ),
            publish_dropped: reg!(
                r,
                "publish_dropped",
                "Publishes dropped before the broker",
                CounterFamily::default()
            ),
            broker_panics: reg!(
                r,
                "broker_panics",
                "Panics caught in embedded broker threads (a count since start)",
                Gauge::default()
            ),
            broker_dropped: reg!(
                r,
                "broker_dropped",
                "Messages the embedded broker did not deliver to a subscriber (full queue, offline QoS 0, spool quota; a count since start)",
                Gauge::default()
            ),
            broker_protocol_errors: reg!(
                r,
                "broker_protocol_errors",
                "Broker connections closed for a protocol violation (a count since start)",
                Gauge::default()
            ),
            broker_publish_denied: reg!(
                r,
                "broker_publish_denied",
                "PUBLISHes refused by the broker ACL, acknowledged and dropped (a count since start)",
                Gauge::default()
            ),
            broker_store_failed_commits: reg!(
                r,
                "broker_store_failed_commits",
                "Broker store commits that failed after retries (a count since start)",
                Gauge::default()
            ),
            broker_connections: reg!(
                r,
                "broker_connections",
                "Client connections on the embedded broker",
                Gauge::default()
            ),
            outbox_depth: reg!(
                r,
                "outbox_depth",
                "Messages in the outbox",
                Gauge::default()
            ),
            outbox_bytes: reg!(
                r,
                "outbox_bytes",
                "Payload and topic bytes in the outbox",
                Gauge::default()
            ),
            outbox_oldest_age_seconds: reg!(
                r,
                "outbox_oldest_age_seconds",
                "Age of the oldest outbox message",
                Gauge::default()
            ),
            uplink_sent: reg!(
                r,
                "uplink_sent",
                "Messages sent upstream",
                Counter::default()
            ),
            uplink_acked: reg!(
                r,
                "uplink_acked",
                "Messages acknowledged by the upstream broker",
                Counter::default()
            ),
            uplink_dropped: reg!(
                r,
                "uplink_dropped",
                "Messages dropped from the outbox",
                CounterFamily::default()
            ),
            outbox_errors: reg!(r, "outbox_errors", "Outbox I/O errors", Counter::default()),
            uplink_connected: reg!(
                r,
                "uplink_connected",
                "1 while connected upstream",
                Gauge::default()
            ),
            uplink_dead: reg!(
                r,
                "uplink_dead",
                "Messages moved to the outbox's dead-letter table",
                Counter::default()
            ),
            outbox_set_aside: reg!(
                r,
                "outbox_set_aside",
                "Broken outbox files renamed to outbox.db.corrupt-<time> at start",
                Counter::default()
            ),
            outbox_problem: Mutex::new(None),
            registry: r,
            started: Instant::now(),
            devices: Mutex::new(BTreeMap::new()),
            collectors: Mutex::new(Vec::new()),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// Records what is wrong with the outbox (shown until the process ends).
    pub fn set_outbox_problem(&self, problem: String) {
        *self
            .outbox_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(problem);
    }

    /// What is wrong with the outbox, if anything.
    pub fn outbox_problem(&self) -> Option<String> {
        self.outbox_problem
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
        };
        if let Ok(mut d) = self.devices.lock() {
            d.insert(device.to_string(), health);
        }
    }

    /// Whether the bridge attached its counters (an uplink is configured).
    pub fn has_bridge(&self) -> bool {
        self.collectors
            .lock()
            .map(|cs| cs.iter().any(|(name, _)| *name == "bridge"))
            .unwrap_or(false)
    }

    /// Devices by name with their last state.
    pub fn devices(&self) -> BTreeMap<String, DeviceHealth> {
        self.devices.lock().map(|d| d.clone()).unwrap_or_default()
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
