//! The broker's metrics: registered in the metrics leaf when the broker
//! starts, and the collector that copies the broker's counters into them
//! (and the status page's [`BrokerFigures`]) whenever the figures are read.
//!
//! Owns the broker's metric names. Must not count anything itself (the
//! counts live in `stats.rs`).

use std::sync::{Arc, LazyLock, Weak};

use super::handle::BrokerHandle;
use super::router::Router;
use crate::metrics::{BrokerFigures, Collector, Gauge, GaugeFamily, Metrics, gauge, labels};

/// Every metric of the broker (names prefixed `fieldgate_`; counts since
/// start, exported as gauges as they always were).
struct BrokerMetrics {
    connections: Gauge,
    panics: Gauge,
    dropped: Gauge,
    protocol_errors: Gauge,
    publish_denied: Gauge,
    store_failed_commits: Gauge,
    store_bytes: Gauge,
    clients_mqtt5: Gauge,
    messages_expired: Gauge,
    shared_redelivered: Gauge,
    limit_hits: GaugeFamily,
}

static METRICS: LazyLock<BrokerMetrics> = LazyLock::new(|| {
    let m = crate::metrics::get();
    let g = |name: &str, help: &str| m.register(name, help, Gauge::default());
    BrokerMetrics {
        connections: g(
            "broker_connections",
            "Client connections on the embedded broker",
        ),
        panics: g(
            "broker_panics",
            "Panics caught in embedded broker threads (a count since start)",
        ),
        dropped: g(
            "broker_dropped",
            "Messages the embedded broker did not deliver to a subscriber (full queue, offline QoS 0, spool quota; a count since start)",
        ),
        protocol_errors: g(
            "broker_protocol_errors",
            "Broker connections closed for a protocol violation (a count since start)",
        ),
        publish_denied: g(
            "broker_publish_denied",
            "PUBLISHes refused by the broker ACL, acknowledged and dropped (a count since start)",
        ),
        store_failed_commits: g(
            "broker_store_failed_commits",
            "Broker store commits that failed after retries (a count since start)",
        ),
        store_bytes: g(
            "broker_store_bytes",
            "Bytes of persistent sessions' messages and retained messages held in broker.db (counted against max_store_bytes)",
        ),
        clients_mqtt5: g(
            "broker_clients_mqtt5",
            "Clients connected to the embedded broker at MQTT 5",
        ),
        messages_expired: g(
            "broker_messages_expired",
            "Messages dropped because their MQTT 5 Message Expiry Interval passed (a count since start)",
        ),
        shared_redelivered: g(
            "broker_shared_redelivered",
            "Messages a shared subscription member left unacknowledged, handed to another member (a count since start)",
        ),
        limit_hits: m.register(
            "broker_limit_hits",
            "Times a broker limit was hit, by its config key (a count since start)",
            GaugeFamily::default(),
        ),
    }
});

/// The collector the broker registers at start (which registers its
/// metrics). Holds the router weakly, so a stopped broker is not kept
/// alive by the registry (its figures then stay as last read).
pub(crate) struct Figures(Weak<Router>);

impl Figures {
    pub(crate) fn of(router: &Arc<Router>) -> Self {
        LazyLock::force(&METRICS);
        Figures(Arc::downgrade(router))
    }
}

impl Collector for Figures {
    fn collect(&self, leaf: &Metrics) {
        let Some(router) = self.0.upgrade() else {
            return;
        };
        let b = BrokerHandle {
            router: router.clone(),
        }
        .stats();
        let m = &*METRICS;
        m.connections.set(gauge(b.clients_connected));
        m.panics.set(gauge(b.panics));
        m.dropped.set(gauge(b.publish_dropped));
        m.protocol_errors.set(gauge(b.protocol_errors));
        m.publish_denied.set(gauge(b.publish_denied));
        m.store_failed_commits.set(gauge(b.store_failed_commits));
        m.store_bytes
            .set(gauge(b.store_bytes.saturating_add(b.retained_bytes)));
        m.clients_mqtt5.set(gauge(b.clients_v5));
        m.messages_expired.set(gauge(b.messages_expired));
        m.shared_redelivered.set(gauge(b.shared_redelivered));
        for (name, hits) in router.stats.limits.all() {
            m.limit_hits
                .get_or_create(&labels("limit", name))
                .set(gauge(hits));
        }
        leaf.set_broker(BrokerFigures {
            clients_connected: b.clients_connected,
            publish_received: b.publish_received,
            publish_sent: b.publish_sent,
            publish_dropped: b.publish_dropped,
            retained: b.retained,
        });
    }
}
