//! The southbound metrics: Modbus requests, errors and timeouts, serial
//! bytes discarded and decoder errors, each per device, and writes the
//! write guard refused, per point and reason; registered in the
//! metrics leaf when the first source starts. (Readings per device and
//! device health belong to the metrics leaf: health reads them.)
//!
//! Owns the southbound metric names. Must not do I/O.

use std::sync::LazyLock;

use crate::metrics::{CounterFamily, Labels, labels};

/// Every southbound metric (names prefixed `fieldgate_`).
pub(crate) struct SouthboundMetrics {
    pub modbus_requests: CounterFamily,
    pub modbus_errors: CounterFamily,
    pub modbus_timeouts: CounterFamily,
    pub serial_discarded_bytes: CounterFamily,
    pub decode_errors: CounterFamily,
    /// Writes the guard refused, per device, point and reason (`range`, `rate`).
    pub writes_refused: CounterFamily,
}

static METRICS: LazyLock<SouthboundMetrics> = LazyLock::new(|| {
    let m = crate::metrics::get();
    let f = |name: &str, help: &str| m.register(name, help, CounterFamily::default());
    SouthboundMetrics {
        modbus_requests: f("modbus_requests", "Modbus requests sent"),
        modbus_errors: f("modbus_errors", "Modbus requests that failed"),
        modbus_timeouts: f("modbus_timeouts", "Modbus requests that timed out"),
        serial_discarded_bytes: f("serial_discarded_bytes", "Serial bytes discarded"),
        decode_errors: f("decode_errors", "Serial decoder errors"),
        writes_refused: f(
            "writes_refused",
            "Writes refused before reaching the device: outside min/max (range) or past max_write_rate (rate)",
        ),
    }
});

/// The southbound metrics, registered at the first call.
pub(crate) fn get() -> &'static SouthboundMetrics {
    &METRICS
}

/// The label set of one device.
pub(crate) fn device(name: &str) -> Labels {
    labels("device", name)
}
