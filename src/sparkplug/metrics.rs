//! The Sparkplug metrics: messages sent per type, history rows stored and
//! sent, commands refused; registered in the metrics leaf when the node
//! starts.
//!
//! Owns these metric names. Must not do I/O.

use std::sync::LazyLock;

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

/// Counts one published message on `topic` (its type is the third level).
pub(crate) fn sent(topic: &str) {
    let kind = topic.split('/').nth(2).unwrap_or("?");
    get().messages.get_or_create(&labels("type", kind)).inc();
}
