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
