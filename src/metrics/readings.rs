//! The last reading of every point, kept for the status page and the JSON
//! API: one map entry per point, overwritten by each new reading.
//!
//! Owns the process-wide map. Sources record into it through
//! `SourceContext::send`; it must not hold anything but the latest value.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::reading::{Quality, Reading, Value};

/// The last reading of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct LastReading {
    pub value: Value,
    pub unit: Option<Arc<str>>,
    pub quality: Quality,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
}

type Map = BTreeMap<Arc<str>, BTreeMap<Arc<str>, LastReading>>;

static LAST: LazyLock<Mutex<Map>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Keeps `r` as its point's last reading (one lock and one map write).
pub fn record(r: &Reading) {
    let last = LastReading {
        value: r.value.clone(),
        unit: r.unit.clone(),
        quality: r.quality,
        ts: r.ts,
    };
    if let Ok(mut map) = LAST.lock() {
        map.entry(r.device.clone())
            .or_default()
            .insert(r.point.clone(), last);
    }
}

/// The last reading of each point of `device`, by point name.
pub fn of_device(device: &str) -> BTreeMap<Arc<str>, LastReading> {
    LAST.lock()
        .ok()
        .and_then(|m| m.get(device).cloned())
        .unwrap_or_default()
}
