//! The types that flow between stages: [`Reading`] (southbound -> rules) and
//! [`Publish`] (rules -> broker and bridge), plus [`Qos`], and the status
//! topics and payloads every stage publishes ([`status`]).
//!
//! Owns only plain data and its JSON form. Must not know about channels,
//! the broker or any device protocol.

pub mod clock;
pub mod status;

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

    /// The default payload of docs/design.md §4:
    /// `{"value": 21.5, "unit": "°C", "ts": 1763773200123, "quality": "good"}`.
    /// Written straight from the reading (no JSON tree in between: this
    /// runs once per reading).
    pub fn to_payload(&self) -> Bytes {
        let p = Payload {
            value: &self.value,
            unit: self.unit.as_deref(),
            ts: self.ts,
            quality: self.quality.as_str(),
            // taken before NTP set the clock: `ts` may be far off
            clock: (!clock::synced(self.ts)).then_some("unsynced"),
        };
        let mut out = Vec::with_capacity(96);
        // writing these types to a Vec cannot fail
        let _ = serde_json::to_writer(&mut out, &p);
        Bytes::from(out)
    }
}

/// The default payload's fields, in their order.
#[derive(Serialize)]
struct Payload<'a> {
    /// Non-finite floats are written as `null` (serde_json's rule).
    value: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    ts: i64,
    quality: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<&'static str>,
}

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
            Value::Bool(true),
            Value::Float(1.0),
            Value::Float(0.1 + 0.2),
            Value::String("a \"b\"\n".into()),
        ] {
            let r = Reading {
                device: "d".into(),
                point: "p".into(),
                value: value.clone(),
                unit: Some("kWh".into()),
                ts: 9,
                quality: Quality::Stale,
            };
            let tree = serde_json::json!({
                "value": value.to_json(), "unit": "kWh", "ts": 9, "quality": "stale"
            });
            assert_eq!(r.to_payload(), Bytes::from(tree.to_string()), "{value:?}");
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
