//! The types that flow between stages: [`Reading`] (southbound -> rules) and
//! [`Publish`] (rules -> broker and bridge), plus [`Qos`], the status
//! topics and payloads every stage publishes ([`status`]), the command
//! topics ([`command`]), and the readings
//! channel between sources and rules ([`batch`]: bounded in readings,
//! carrying batches).
//!
//! Owns only plain data, its JSON form and the readings channel. Must not
//! know about the broker or any device protocol.

pub mod batch;
pub mod clock;
pub mod command;
pub mod status;

use std::cell::RefCell;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One sampled value of a device point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl Value {
    /// The value as JSON. Non-finite floats have no JSON form and become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

/// How much a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    Bad,
    Stale,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }
}

/// One sampled value: what a source hands to the rules stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: Arc<str>,
    pub point: Arc<str>,
    pub value: Value,
    pub unit: Option<Arc<str>>,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub quality: Quality,
}

impl Reading {
    /// A reading of good quality.
    pub fn good(
        device: &Arc<str>,
        point: &Arc<str>,
        value: Value,
        unit: &Option<Arc<str>>,
        ts: i64,
    ) -> Reading {
        Reading {
            device: device.clone(),
            point: point.clone(),
            value,
            unit: unit.clone(),
            ts,
            quality: Quality::Good,
        }
    }

    /// Whether `a` and `b` are of one device: by pointer first (a batch's
    /// readings share their device's name; comparing the text costs a
    /// call per reading), else by name. For `slice::chunk_by`: a batch's
    /// runs of readings per device.
    pub fn same_device(a: &Reading, b: &Reading) -> bool {
        Arc::ptr_eq(&a.device, &b.device) || a.device == b.device
    }

    /// The default payload of docs/design.md §4:
    /// `{"value": 21.5, "unit": "°C", "ts": 1763773200123, "quality": "good"}`.
    /// Written straight from the reading (no JSON tree in between, the
    /// field names as fixed bytes: this runs once per reading) into a
    /// reused buffer, then copied once into a payload of exactly its size.
    /// The value and the unit go through serde_json (escaping, number
    /// formatting; non-finite floats become `null`).
    pub fn to_payload(&self) -> Bytes {
        PAYLOAD_BUF.with(|buf| {
            let mut out = buf.borrow_mut();
            out.clear();
            self.write_payload(&mut out);
            let payload = Bytes::copy_from_slice(&out);
            if out.capacity() > PAYLOAD_BUF_KEEP {
                out.clear();
                out.shrink_to(PAYLOAD_BUF_KEEP);
            }
            payload
        })
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        write_fields(
            out,
            Some(&self.value),
            self.unit.as_deref(),
            self.ts,
            self.quality,
        );
        // taken before NTP set the clock: `ts` may be far off
        if !clock::synced(self.ts) {
            out.extend_from_slice(b",\"clock\":\"unsynced\"");
        }
        out.push(b'}');
    }
}

/// The fields of the default payload, without braces:
/// `"value":21.5,"unit":"°C","ts":1763773200123,"quality":"good"` (`unit`
/// left out when `None`; a `None` value is written `null`). Shared by the
/// per-point payload and the per-device one (`rules::grouping`), so a
/// point reads the same in both.
pub(crate) fn write_fields(
    out: &mut Vec<u8>,
    value: Option<&Value>,
    unit: Option<&str>,
    ts: i64,
    quality: Quality,
) {
    out.extend_from_slice(b"\"value\":");
    write_value(out, value);
    write_unit_ts(out, unit);
    // writing an integer to a Vec cannot fail
    let _ = serde_json::to_writer(&mut *out, &ts);
    out.extend_from_slice(quality_end(quality));
}

/// A value as JSON (`None` and non-finite floats: `null`).
#[inline]
pub(crate) fn write_value(out: &mut Vec<u8>, value: Option<&Value>) {
    match value {
        // what serde_json writes for an integer (it formats with itoa too),
        // without its serializer around it: this runs once per reading
        Some(Value::Int(i)) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        // writing these types to a Vec cannot fail
        Some(v) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// What [`write_fields`] writes between the value and the ts:
/// `,"unit":"°C","ts":` (or `,"ts":` without a unit).
pub(crate) fn write_unit_ts(out: &mut Vec<u8>, unit: Option<&str>) {
    write_unit(out, unit);
    out.extend_from_slice(TS_KEY);
}

/// The key of the ts field with the comma before it: `,"ts":`.
pub(crate) const TS_KEY: &[u8] = b",\"ts\":";

/// `,"unit":"°C"` (nothing without a unit).
pub(crate) fn write_unit(out: &mut Vec<u8>, unit: Option<&str>) {
    if let Some(unit) = unit {
        out.extend_from_slice(b",\"unit\":");
        // writing a str to a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, unit);
    }
}

/// What [`write_fields`] writes after the ts: `,"quality":"good"`.
pub(crate) fn quality_end(quality: Quality) -> &'static [u8] {
    match quality {
        Quality::Good => b",\"quality\":\"good\"",
        Quality::Bad => b",\"quality\":\"bad\"",
        Quality::Stale => b",\"quality\":\"stale\"",
    }
}

thread_local! {
    /// The buffer [`Reading::to_payload`] writes into (one per thread;
    /// kept small: a payload with a long string value shrinks it back).
    static PAYLOAD_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(PAYLOAD_BUF_KEEP));
}

/// The buffer size [`Reading::to_payload`] keeps between readings.
const PAYLOAD_BUF_KEEP: usize = 256;

/// MQTT quality of service. In YAML it is written 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Qos {
    AtMostOnce,
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    pub fn from_u8(v: u8) -> Option<Qos> {
        match v {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            2 => Some(Qos::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
}

impl Serialize for Qos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for Qos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .and_then(Qos::from_u8)
            .ok_or_else(|| serde::de::Error::custom(format!("qos must be 0, 1 or 2, not {v}")))
    }
}

/// An MQTT message on its way to the local broker (and, through forward
/// filters, to the bridge).
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let values = [
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(65_535),
            Value::Int(i64::MAX),
            Value::Float(-0.1),
            Value::Float(f64::INFINITY),
            Value::Bool(false),
            Value::String("a\"b\u{e9}".into()),
        ];
        for v in &values {
            let mut out = Vec::new();
            write_value(&mut out, Some(v));
            assert_eq!(out, serde_json::to_vec(v).unwrap(), "{v:?}");
        }
        let (mut out, qualities) = (Vec::new(), [Quality::Good, Quality::Bad, Quality::Stale]);
        for q in qualities {
            out.clear();
            out.extend_from_slice(quality_end(q));
            assert_eq!(out, format!(",\"quality\":\"{}\"", q.as_str()).into_bytes());
        }
    }

    #[test]
    fn payload_omits_missing_unit() {
        // exact payloads: whatever this machine's clock state
        clock::set_check(false);
        let r = Reading {
            device: "d".into(),
            point: "p".into(),
            value: Value::Float(21.5),
            unit: None,
            ts: 5,
            quality: Quality::Good,
        };
        assert_eq!(
            r.to_payload(),
            Bytes::from_static(br#"{"value":21.5,"ts":5,"quality":"good"}"#)
        );
    }

    #[test]
    fn payload_of_each_value_kind_matches_the_json_tree() {
        clock::set_check(false);
        for value in [
            Value::Int(-42),
            Value::Int(i64::MIN),
            Value::Bool(true),
            Value::Float(1.0),
            Value::Float(0.1 + 0.2),
            Value::Float(-0.0),
            Value::Float(1e300),
            Value::String("a \"b\"\n".into()),
        ] {
            for unit in ["kWh", "°C", "a\"b\\c\u{1}/"] {
                let r = Reading {
                    device: "d".into(),
                    point: "p".into(),
                    value: value.clone(),
                    unit: Some(unit.into()),
                    ts: -9,
                    quality: Quality::Stale,
                };
                let tree = serde_json::json!({
                    "value": value.to_json(), "unit": unit, "ts": -9, "quality": "stale"
                });
                assert_eq!(r.to_payload(), Bytes::from(tree.to_string()), "{value:?}");
            }
        }
    }

    #[test]
    fn payload_with_unit_and_nan() {
        clock::set_check(false);
        let r = Reading {
            device: "d".into(),
            point: "p".into(),
            value: Value::Float(f64::NAN),
            unit: Some("°C".into()),
            ts: 7,
            quality: Quality::Bad,
        };
        assert_eq!(
            r.to_payload(),
            Bytes::from(r#"{"value":null,"unit":"°C","ts":7,"quality":"bad"}"#)
        );
    }
}
