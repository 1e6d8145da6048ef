//! The Sparkplug metrics: messages sent per type, history rows stored and
//! sent, commands refused; registered in the metrics leaf when the node
//! starts.
//!
//! Owns these metric names. Must not do I/O.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{CounterFamily, labels};

/// Every Sparkplug metric (names prefixed `fieldgate_`).
pub(crate) struct SparkplugMetrics {
    /// Messages published, per `type` (NBIRTH, DBIRTH, DDATA, ...).
    pub messages: CounterFamily,
    /// DDATA stored as history, and sent from history (`what`).
    pub history: CounterFamily,
    /// Commands refused or ignored, per `reason`.
    pub commands_refused: CounterFamily,
}

static METRICS: LazyLock<SparkplugMetrics> = LazyLock::new(|| {
    let m = crate::metrics::get();
    let f = |name: &str, help: &str| m.register(name, help, CounterFamily::default());
    SparkplugMetrics {
        messages: f(
            "sparkplug_messages",
            "Sparkplug messages published, per type",
        ),
        history: f(
            "sparkplug_history",
            "Sparkplug DDATA stored while the primary host was offline (stored) and sent as history (sent)",
        ),
        commands_refused: f(
            "sparkplug_commands_refused",
            "Sparkplug NCMD/DCMD not carried out, per reason",
        ),
    }
});

/// The Sparkplug metrics, registered at the first call.
pub(crate) fn get() -> &'static SparkplugMetrics {
    &METRICS
}

/// The DDATA counter, looked up once: one DDATA goes out per poll of
/// every device, and a lookup by label builds and hashes the label set.
static DDATA: LazyLock<Counter> = LazyLock::new(|| {
    get()
        .messages
        .get_or_create(&labels("type", "DDATA"))
        .clone()
});

/// Counts one published message on `topic` (its type is the third level).
pub(crate) fn sent(topic: &str) {
    match topic.split('/').nth(2).unwrap_or("?") {
        "DDATA" => DDATA.inc(),
        kind => get().messages.get_or_create(&labels("type", kind)).inc(),
    };
}
