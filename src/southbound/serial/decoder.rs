//! Turns one frame into named values: the built-in `json` decoder (one JSON
//! object per frame) or a Rhai script's `fn decode(frame)`, then the
//! `points:` list (units, types, `strict`).
//!
//! Owns the decoder contract: `frame` is a map `#{ text, bytes }` (`text` is
//! the frame as a string when it is valid UTF-8, else `()`; `bytes` is
//! always the blob), and the result is a map of point name to value, an
//! array of such maps, or `()` for "nothing in this frame". A value may be a
//! map `#{ value, unit }`. Must not do I/O: the caller reads the port and
//! sends the readings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Blob, Dynamic, Engine, ImmutableString, Map};
use serde::Deserialize;

use crate::config::types::is_valid_name;
use crate::reading::Value;
use crate::script::{Limits, Script, ScriptError, convert};

/// The type a `points:` entry forces a decoded value into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointType {
    Bool,
    Int,
    Float,
    String,
}

/// One entry of a serial device's `points:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPoint {
    pub name: String,
    pub unit: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<PointType>,
}

/// One decoded value, ready to become a reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub point: Arc<str>,
    pub value: Value,
    pub unit: Option<Arc<str>>,
}

/// Why a frame gave no readings.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error(
        "{script}: decode returned {what}; expected a map of point name to value, an array of maps, or ()"
    )]
    Shape { script: Arc<str>, what: String },
    #[error("{script}: point {point:?}: {why}")]
    Point {
        script: Arc<str>,
        point: String,
        why: String,
    },
}

enum Kind {
    Json,
    Script {
        engine: Box<Engine>,
        script: Script,
        state: Dynamic,
    },
}

/// A configured point: its name, unit and type.
type PointInfo = (Arc<str>, Option<Arc<str>>, Option<PointType>);

/// A decoder with the device's `points:` applied.
pub struct Decoder {
    kind: Kind,
    /// How messages name the decoder: the script file, or `json`.
    name: Arc<str>,
    points: HashMap<String, PointInfo>,
    strict: bool,
}

impl Decoder {
    /// The built-in JSON decoder.
    pub fn json(points: &[SerialPoint], strict: bool) -> Decoder {
        Self::with(Kind::Json, "json".into(), points, strict)
    }

    /// Compiles a script that defines `fn decode(frame)`.
    pub fn script(
        path: &Path,
        limits: &Limits,
        points: &[SerialPoint],
        strict: bool,
    ) -> Result<Decoder, ScriptError> {
        let engine = crate::script::engine(limits);
        let name = path.display().to_string();
        let script = Script::compile_file(&engine, path, &name)?;
        script.require_fn("decode", 1)?;
        let kind = Kind::Script {
            engine: Box::new(engine),
            script,
            state: Dynamic::from_map(Map::new()),
        };
        Ok(Self::with(kind, name.into(), points, strict))
    }

    fn with(kind: Kind, name: Arc<str>, points: &[SerialPoint], strict: bool) -> Decoder {
        let points = points
            .iter()
            .map(|p| {
                let v = (
                    Arc::from(p.name.as_str()),
                    p.unit.as_deref().map(Arc::from),
                    p.kind,
                );
                (p.name.clone(), v)
            })
            .collect();
        Decoder {
            kind,
            name,
            points,
            strict,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decodes one frame. Unknown names are dropped when `strict`.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
        let raw = match &mut self.kind {
            Kind::Json => {
                let text = std::str::from_utf8(frame)
                    .map_err(|_| DecodeError::Json("the frame is not UTF-8".into()))?;
                let v: serde_json::Value = serde_json::from_str(text.trim())
                    .map_err(|e| DecodeError::Json(e.to_string()))?;
                if !v.is_object() {
                    return Err(DecodeError::Json(format!("got {v}")));
                }
                convert::from_json(&v)
            }
            Kind::Script {
                engine,
                script,
                state,
            } => {
                let mut arg = Map::new();
                let text = match std::str::from_utf8(frame) {
                    Ok(t) => Dynamic::from(ImmutableString::from(t)),
                    Err(_) => Dynamic::UNIT,
                };
                arg.insert("text".into(), text);
                let blob: Blob = frame.to_vec();
                arg.insert("bytes".into(), Dynamic::from_blob(blob));
                let out = script.call(engine, state, "decode", (Dynamic::from_map(arg),));
                if let Err(ScriptError::StateTooLarge { .. }) = &out {
                    *state = Dynamic::from_map(Map::new());
                }
                out?
            }
        };
        let mut out = Vec::new();
        if raw.is_unit() {
            return Ok(out);
        }
        if let Some(arr) = raw.read_lock::<Array>() {
            for item in arr.iter() {
                self.add_map(item, &mut out)?;
            }
            return Ok(out);
        }
        self.add_map(&raw, &mut out)?;
        Ok(out)
    }

    fn add_map(&self, v: &Dynamic, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let Some(map) = v.read_lock::<Map>() else {
            return Err(DecodeError::Shape {
                script: self.name.clone(),
                what: format!("a {}", v.type_name()),
            });
        };
        for (key, val) in map.iter() {
            let key = key.as_str();
            let known = self.points.get(key);
            if known.is_none() && self.strict {
                continue;
            }
            let point_err = |why: String| DecodeError::Point {
                script: self.name.clone(),
                point: key.to_string(),
                why,
            };
            if !is_valid_name(key) {
                return Err(point_err(
                    "not a valid point name (letters, digits, `_` and `-` only)".into(),
                ));
            }
            // `#{ value: .., unit: .. }` or a plain value; `()` means "not in this frame".
            let (val, mut unit) = match val.read_lock::<Map>() {
                Some(m) => (
                    m.get("value").cloned().unwrap_or(Dynamic::UNIT),
                    m.get("unit").map(|u| Arc::from(u.to_string().as_str())),
                ),
                None => (val.clone(), None),
            };
            if val.is_unit() {
                continue;
            }
            if let Ok(f) = val.as_float()
                && !f.is_finite()
            {
                return Err(point_err(format!("{f} is not a finite number")));
            }
            let mut value = convert::to_value(&val).ok_or_else(|| {
                point_err(format!(
                    "a {} is not a value (use bool, int, float or string)",
                    val.type_name()
                ))
            })?;
            let point = match known {
                Some((name, cfg_unit, kind)) => {
                    if unit.is_none() {
                        unit = cfg_unit.clone();
                    }
                    if let Some(kind) = kind {
                        value = coerce(value, *kind).map_err(point_err)?;
                    }
                    name.clone()
                }
                None => Arc::from(key),
            };
            out.push(Decoded { point, value, unit });
        }
        Ok(())
    }
}

/// Forces a value into the configured type.
fn coerce(v: Value, kind: PointType) -> Result<Value, String> {
    let bad = |v: &Value| format!("{v:?} cannot be read as {kind:?}");
    Ok(match (kind, v) {
        (PointType::String, v) => Value::String(v.to_string()),
        (PointType::Float, Value::Int(i)) => Value::Float(i as f64),
        (PointType::Float, Value::Float(f)) => Value::Float(f),
        (PointType::Float, Value::String(s)) => {
            Value::Float(s.trim().parse().map_err(|_| bad(&Value::String(s)))?)
        }
        (PointType::Int, Value::Int(i)) => Value::Int(i),
        (PointType::Int, Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Value::Int(f as i64)
        }
        (PointType::Int, Value::String(s)) => {
            Value::Int(s.trim().parse().map_err(|_| bad(&Value::String(s)))?)
        }
        (PointType::Bool, Value::Bool(b)) => Value::Bool(b),
        (PointType::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (PointType::Bool, Value::String(s)) => match s.trim() {
            "true" | "1" | "on" => Value::Bool(true),
            "false" | "0" | "off" => Value::Bool(false),
            _ => return Err(bad(&Value::String(s))),
        },
        (_, v) => return Err(bad(&v)),
    })
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
pub(crate) mod tests;
