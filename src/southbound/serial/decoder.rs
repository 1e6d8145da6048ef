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
pub(crate) mod tests {
    //! Tests of the decoders: the built-in JSON decoder, `points:`/`strict`,
    //! and the example decoders in `plugins/` loaded from the source tree.

    use std::path::PathBuf;

    use super::*;

    fn plugin(name: &str, points: &[SerialPoint], strict: bool) -> Decoder {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("plugins")
            .join(name);
        Decoder::script(&path, &Limits::default(), points, strict).expect("plugin compiles")
    }

    fn script(text: &str) -> Decoder {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.rhai");
        std::fs::write(&path, text).unwrap();
        Decoder::script(&path, &Limits::default(), &[], false).unwrap()
    }

    fn pairs(d: Vec<Decoded>) -> Vec<(String, Value)> {
        let mut v: Vec<_> = d
            .into_iter()
            .map(|d| (d.point.to_string(), d.value))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn get(d: &[Decoded], name: &str) -> Decoded {
        d.iter()
            .find(|d| &*d.point == name)
            .unwrap_or_else(|| panic!("no {name} in {d:?}"))
            .clone()
    }

    #[test]
    fn json_object_per_frame() {
        let mut d = Decoder::json(&[], false);
        let got = d
            .decode(br#"{"temp": 21.5, "count": 3, "on": true, "mode": "auto", "gone": null, "nested": {"value": 1, "unit": "V"}}"#)
            .unwrap();
        let nested = get(&got, "nested");
        assert_eq!(nested.unit.as_deref(), Some("V"));
        assert_eq!(
            pairs(got),
            vec![
                ("count".into(), Value::Int(3)),
                ("mode".into(), Value::String("auto".into())),
                ("nested".into(), Value::Int(1)),
                ("on".into(), Value::Bool(true)),
                ("temp".into(), Value::Float(21.5)),
            ]
        );
        assert!(matches!(d.decode(b"[1,2]"), Err(DecodeError::Json(_))));
        assert!(matches!(d.decode(b"{broken"), Err(DecodeError::Json(_))));
        assert!(matches!(d.decode(b"\xff{}"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn points_add_units_and_types_and_strict_drops_unknown() {
        let points: Vec<SerialPoint> = serde_yaml_ng::from_str(
            "[{name: temp, unit: °C, type: float}, {name: count, type: int}, {name: label, type: string}]",
        )
        .unwrap();
        let mut d = Decoder::json(&points, true);
        let got = d
            .decode(br#"{"temp": 21, "count": "7", "label": 5, "other": 1}"#)
            .unwrap();
        assert_eq!(get(&got, "temp").unit.as_deref(), Some("°C"));
        assert_eq!(
            pairs(got),
            vec![
                ("count".into(), Value::Int(7)),
                ("label".into(), Value::String("5".into())),
                ("temp".into(), Value::Float(21.0)),
            ]
        );
        let err = d.decode(br#"{"count": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("count"), "{err}");
        // Not strict: unknown names pass.
        let mut d = Decoder::json(&points, false);
        assert_eq!(d.decode(br#"{"other": 1}"#).unwrap().len(), 1);
    }

    #[test]
    fn script_gets_text_and_bytes_and_may_return_an_array() {
        let mut d = script(
            "fn decode(frame) {\n  [#{ n: frame.bytes.len(), t: frame.text ?? \"none\" }, #{ first: frame.bytes[0] }]\n}\n",
        );
        let got = pairs(d.decode(b"ab").unwrap());
        assert_eq!(
            got,
            vec![
                ("first".into(), Value::Int(97)),
                ("n".into(), Value::Int(2)),
                ("t".into(), Value::String("ab".into())),
            ]
        );
        let got = pairs(d.decode(b"\xff\x00").unwrap());
        assert_eq!(got[1], ("n".into(), Value::Int(2)));
        assert_eq!(got[2], ("t".into(), Value::String("none".into())));
    }

    #[test]
    fn script_errors_name_file_and_line() {
        let mut d = script("fn decode(frame) {\n  let x = 1;\n  throw \"bad frame\";\n}\n");
        let err = d.decode(b"x").unwrap_err().to_string();
        assert!(err.contains("d.rhai:3"), "{err}");
        assert!(err.contains("bad frame"), "{err}");
        let mut d = script("fn decode(frame) { 42 }");
        assert!(matches!(d.decode(b"x"), Err(DecodeError::Shape { .. })));
        let mut d = script("fn decode(frame) { #{ \"a/b\": 1 } }");
        assert!(matches!(d.decode(b"x"), Err(DecodeError::Point { .. })));
    }

    #[test]
    fn script_without_decode_or_with_syntax_error_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.rhai");
        std::fs::write(&path, "fn other(x) { x }").unwrap();
        let err = Decoder::script(&path, &Limits::default(), &[], false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("fn decode"), "{err}");
        std::fs::write(&path, "fn decode(frame) {\n  let = 1;\n}").unwrap();
        let err = Decoder::script(&path, &Limits::default(), &[], false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("d.rhai:2"), "{err}");
    }

    #[test]
    fn plugin_keyvalue() {
        let mut d = plugin("keyvalue.rhai", &[], false);
        let got = pairs(d.decode(b"temp=21.5;hum=40, door=open ok=true").unwrap());
        assert_eq!(
            got,
            vec![
                ("door".into(), Value::String("open".into())),
                ("hum".into(), Value::Int(40)),
                ("ok".into(), Value::Bool(true)),
                ("temp".into(), Value::Float(21.5)),
            ]
        );
        assert!(d.decode(b"  ").unwrap().is_empty());
        assert!(d.decode(b"garbage").is_err());
    }

    #[test]
    fn plugin_nmea_gga() {
        let mut d = plugin("nmea_gga.rhai", &[], false);
        let got = d
            .decode(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47")
            .unwrap();
        let f = |n: &str| match get(&got, n).value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            other => panic!("{n}: {other:?}"),
        };
        assert!((f("latitude") - (48.0 + 7.038 / 60.0)).abs() < 1e-9);
        assert!((f("longitude") - (11.0 + 31.0 / 60.0)).abs() < 1e-9);
        assert_eq!(f("satellites"), 8.0);
        assert_eq!(f("fix"), 1.0);
        assert_eq!(f("altitude"), 545.4);
        assert_eq!(get(&got, "altitude").unit.as_deref(), Some("m"));
        // Southern/western hemisphere.
        let s = "GPGGA,000000,3351.000,S,15112.000,W,1,05,1.2,10.0,M,,M,,";
        let sum = s.bytes().fold(0u8, |a, b| a ^ b);
        let got = d.decode(format!("${s}*{sum:02X}").as_bytes()).unwrap();
        assert!(f2(&got, "latitude") < -33.0 && f2(&got, "longitude") < -151.0);
        // Other sentences are ignored; a wrong checksum is an error.
        assert!(
            d.decode(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A")
                .unwrap()
                .is_empty()
        );
        let err = d
            .decode(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48")
            .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    fn f2(d: &[Decoded], n: &str) -> f64 {
        match get(d, n).value {
            Value::Float(x) => x,
            other => panic!("{n}: {other:?}"),
        }
    }

    /// An SDS011 frame for PM2.5 and PM10 in 0.1 µg/m³.
    pub(crate) fn sds011(pm25: u16, pm10: u16) -> Vec<u8> {
        let mut f = vec![0xAA, 0xC0];
        f.extend_from_slice(&pm25.to_le_bytes());
        f.extend_from_slice(&pm10.to_le_bytes());
        f.extend_from_slice(&[0x12, 0x34]);
        let sum = f[2..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        f.push(sum);
        f.push(0xAB);
        f
    }

    #[test]
    fn plugin_binary_frame() {
        let mut d = plugin("binary_frame.rhai", &[], false);
        let got = d.decode(&sds011(123, 4567)).unwrap();
        assert_eq!(f2(&got, "pm2_5"), 12.3);
        assert_eq!(f2(&got, "pm10"), 456.7);
        assert_eq!(get(&got, "pm10").unit.as_deref(), Some("µg/m³"));
        assert_eq!(get(&got, "sensor_id").value, Value::Int(0x3412));
        let mut bad = sds011(1, 2);
        bad[8] ^= 1;
        assert!(d.decode(&bad).unwrap_err().to_string().contains("checksum"));
        let mut bad = sds011(1, 2);
        bad[0] = 0;
        assert!(d.decode(&bad).is_err());
    }
}
