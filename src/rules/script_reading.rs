//! The reading object rule scripts get in `on_reading(r)` (`ScriptReading`,
//! registered as the Rhai type `Reading` in `script_functions.rs`), its default payload
//! and its text form.
//!
//! Owns the conversion from a [`Reading`] only. Shared by `script_functions.rs` (the
//! script functions) and `state.rs` (what `last_reading` remembers), which
//! must not import each other.

use bytes::Bytes;
use rhai::{Dynamic, INT, ImmutableString};

use crate::reading::Reading;
use crate::script::convert;

/// The reading object of a script: `device, point, value, unit, ts,
/// quality, topic`, all readable and writable. `topic` is the default topic
/// of the current `device`/`point` until the script sets it.
#[derive(Debug, Clone)]
pub struct ScriptReading {
    pub device: ImmutableString,
    pub point: ImmutableString,
    pub value: Dynamic,
    /// A string, or `()` when the point has no unit.
    pub unit: Dynamic,
    pub ts: INT,
    pub quality: ImmutableString,
    pub topic: Option<ImmutableString>,
}

impl ScriptReading {
    pub fn new(r: &Reading) -> Self {
        ScriptReading {
            device: r.device.as_ref().into(),
            point: r.point.as_ref().into(),
            value: convert::from_value(&r.value),
            unit: match &r.unit {
                Some(u) => Dynamic::from(ImmutableString::from(u.as_ref())),
                None => Dynamic::UNIT,
            },
            ts: r.ts,
            quality: r.quality.as_str().into(),
            topic: None,
        }
    }

    /// The default payload (docs/design.md §4) of this reading as the script left it.
    pub(super) fn payload(&self) -> Bytes {
        let mut map = serde_json::Map::with_capacity(4);
        map.insert("value".into(), convert::to_json(&self.value));
        if let Some(u) = self.unit.read_lock::<ImmutableString>() {
            map.insert("unit".into(), serde_json::Value::String(u.to_string()));
        }
        map.insert("ts".into(), self.ts.into());
        map.insert("quality".into(), self.quality.as_str().into());
        if !crate::reading::clock::synced(self.ts) {
            map.insert("clock".into(), "unsynced".into());
        }
        Bytes::from(serde_json::Value::Object(map).to_string())
    }
}

impl std::fmt::Display for ScriptReading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}={}", self.device, self.point, self.value)?;
        if let Some(u) = self.unit.read_lock::<ImmutableString>() {
            write!(f, " {}", u.as_str())?;
        }
        write!(f, " ({}, ts {})", self.quality, self.ts)
    }
}
