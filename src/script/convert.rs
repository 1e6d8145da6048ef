//! Conversions between Rhai values and the gateway's data: JSON (both
//! ways), reading [`Value`]s, and MQTT payload bytes. Also registers the
//! script helpers `parse_json(text)` and `to_json(value)`.
//!
//! Owns only conversions; no engine set-up beyond registering those two
//! functions.

use bytes::Bytes;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use crate::reading::Value;

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "parse_json",
        |text: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Box::new(EvalAltResult::ErrorRuntime(
                    format!("invalid JSON: {e}").into(),
                    Position::NONE,
                ))
            })?;
            Ok(from_json(&v))
        },
    );
    engine.register_fn("to_json", |v: Dynamic| to_json(&v).to_string());
}

/// A JSON value as a Rhai value: objects become maps, arrays arrays,
/// `null` becomes `()`. Integers that fit `i64` stay integers.
pub fn from_json(v: &serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => Dynamic::from_bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        serde_json::Value::Array(a) => Dynamic::from_array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.as_str().into(), from_json(v));
            }
            Dynamic::from_map(m)
        }
    }
}

/// A Rhai value as JSON: `()` is `null`, a non-finite float is `null`, a
/// blob is an array of bytes, and anything else (a reading, a timestamp) its
/// `to_string()` text.
pub fn to_json(v: &Dynamic) -> serde_json::Value {
    if v.is_unit() {
        return serde_json::Value::Null;
    }
    if let Ok(b) = v.as_bool() {
        return b.into();
    }
    if let Ok(i) = v.as_int() {
        return i.into();
    }
    if let Ok(f) = v.as_float() {
        return serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null);
    }
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return serde_json::Value::String(s.to_string());
    }
    if let Some(c) = v.read_lock::<char>() {
        return serde_json::Value::String(c.to_string());
    }
    if let Some(a) = v.read_lock::<Array>() {
        return serde_json::Value::Array(a.iter().map(to_json).collect());
    }
    if let Some(b) = v.read_lock::<Blob>() {
        return serde_json::Value::Array(b.iter().map(|x| (*x).into()).collect());
    }
    if let Some(m) = v.read_lock::<Map>() {
        let mut o = serde_json::Map::with_capacity(m.len());
        for (k, v) in m.iter() {
            o.insert(k.to_string(), to_json(v));
        }
        return serde_json::Value::Object(o);
    }
    serde_json::Value::String(v.to_string())
}

/// A reading value as a Rhai value (`bool`, `int`, `float` or `string`).
pub fn from_value(v: &Value) -> Dynamic {
    match v {
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => Dynamic::from_int(*i),
        Value::Float(f) => Dynamic::from_float(*f),
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
    }
}

/// A Rhai value as a reading value, when it is one of the four kinds.
pub fn to_value(v: &Dynamic) -> Option<Value> {
    if let Ok(b) = v.as_bool() {
        Some(Value::Bool(b))
    } else if let Ok(i) = v.as_int() {
        Some(Value::Int(i))
    } else if let Ok(f) = v.as_float() {
        Some(Value::Float(f))
    } else {
        v.read_lock::<ImmutableString>()
            .map(|s| Value::String(s.to_string()))
    }
}

/// A script's payload as MQTT bytes: a string as is, a blob as its bytes,
/// anything else (map, array, number, bool, `()`) as JSON text.
pub fn to_payload(v: &Dynamic) -> Bytes {
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return Bytes::copy_from_slice(s.as_bytes());
    }
    if let Some(b) = v.read_lock::<Blob>() {
        return Bytes::copy_from_slice(&b);
    }
    Bytes::from(to_json(v).to_string())
}
