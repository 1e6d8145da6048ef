//! Unit tests of the rules API, engine and reload, and of the example
//! scripts in plugins/.

use std::path::{Path, PathBuf};

use super::*;
use crate::reading::Value;

pub(super) fn reading(device: &str, point: &str, value: Value, ts: i64) -> Reading {
    Reading {
        device: device.into(),
        point: point.into(),
        value,
        unit: None,
        ts,
        quality: crate::reading::Quality::Good,
    }
}

/// Engine over script files, with the default rules config.
pub(super) fn engine_for(paths: &[PathBuf]) -> RulesEngine {
    let (engine, errors) = RulesEngine::new("gw", &RulesConfig::default(), paths.to_vec());
    assert!(errors.is_empty(), "{errors:?}");
    engine
}

/// A script in a fresh temp dir; keep the dir alive.
pub(super) fn script(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("t.rhai");
    std::fs::write(&p, text).expect("write script");
    (dir, p)
}

pub(super) fn run(engine: &mut RulesEngine, r: &Reading) -> (Vec<Publish>, Vec<Failure>) {
    let mut out = Vec::new();
    let f = engine.process(r, &mut out);
    (out, f)
}

fn json(p: &Publish) -> serde_json::Value {
    serde_json::from_slice(&p.payload).expect("JSON payload")
}

pub(super) fn one(text: &str, r: &Reading) -> (Vec<Publish>, Vec<Failure>) {
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    run(&mut e, r)
}

#[test]
fn emit_publishes_the_reading_with_the_defaults() {
    let mut r = reading("boiler", "temp", Value::Float(21.5), 7);
    r.unit = Some("°C".into());
    let (out, f) = one("fn on_reading(r) { emit(r); }", &r);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "gw/boiler/temp");
    assert_eq!((out[0].qos, out[0].retain), (Qos::AtLeastOnce, false));
    assert_eq!(&out[0].payload[..], &r.to_payload()[..]);
}

#[test]
fn reading_fields_are_readable_and_writable() {
    // an exact payload: whatever this machine's clock state
    crate::reading::clock::set_check(false);
    let mut r = reading("boiler", "temp", Value::Int(20), 1000);
    r.unit = Some("°C".into());
    let text = r#"
fn on_reading(r) {
    let seen = `${r.device}|${r.point}|${r.value}|${r.unit}|${r.ts}|${r.quality}|${r.topic}`;
    publish("seen", seen);
    r.device = "b2";
    r.point = "t2";
    publish("topic-after-rename", r.topic);
    r.value = r.value * 1.5;
    r.unit = ();
    r.ts = 5;
    r.quality = "stale";
    emit(r);
    r.topic = "custom/t";
    emit(r);
}"#;
    let (out, f) = one(text, &r);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(out[0].topic, "seen");
    assert_eq!(
        &out[0].payload[..],
        b"boiler|temp|20|\xc2\xb0C|1000|good|gw/boiler/temp"
    );
    assert_eq!(&out[1].payload[..], b"gw/b2/t2");
    assert_eq!(out[2].topic, "gw/b2/t2");
    assert_eq!(
        json(&out[2]),
        serde_json::json!({"value": 30.0, "ts": 5, "quality": "stale"})
    );
    assert_eq!(out[3].topic, "custom/t");
}

#[test]
fn doing_nothing_drops_the_reading() {
    let r = reading("d", "p", Value::Bool(true), 1);
    let (out, f) = one("fn on_reading(r) { if r.point == \"x\" { emit(r) } }", &r);
    assert!(out.is_empty() && f.is_empty());
}

#[test]
fn publish_payload_kinds_qos_and_retain() {
    let r = reading("d", "p", Value::Int(3), 1);
    let text = r#"
fn on_reading(r) {
    publish("a/map", #{ v: r.value, ok: true });
    publish("a/str", "plain text");
    let b = blob(2, 0x41);
    publish("a/blob", b, 2, true);
    publish("a/num", 2.5, 0, false);
}"#;
    let (out, f) = one(text, &r);
    assert!(f.is_empty(), "{f:?}");
    let got: Vec<_> = out
        .iter()
        .map(|p| {
            (
                p.topic.as_str(),
                p.payload.to_vec(),
                p.qos.as_u8(),
                p.retain,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a/map", br#"{"ok":true,"v":3}"#.to_vec(), 1, false),
            ("a/str", b"plain text".to_vec(), 1, false),
            ("a/blob", b"AA".to_vec(), 2, true),
            ("a/num", b"2.5".to_vec(), 0, false),
        ]
    );
}

#[test]
fn bad_publish_arguments_are_script_errors_at_their_line() {
    let r = reading("d", "p", Value::Int(3), 1);
    for (text, needle) in [
        (
            "fn on_reading(r) {\n  publish(\"a/#\", 1);\n}",
            "not allowed",
        ),
        (
            "fn on_reading(r) {\n  publish(\"a\", 1, 3, false);\n}",
            "qos must be",
        ),
        (
            "fn on_reading(r) {\n  r.quality = \"great\";\n}",
            "quality must be",
        ),
        ("fn on_reading(r) {\n  publish(\"\", 1);\n}", "empty"),
    ] {
        let (out, f) = one(text, &r);
        assert!(out.is_empty(), "{text}");
        assert_eq!(f.len(), 1, "{text}");
        let msg = f[0].error.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
        assert_eq!(
            f[0].error.at().and_then(|a| a.line),
            Some(2),
            "{text}: {msg}"
        );
    }
}

#[test]
fn a_failed_call_publishes_nothing_and_is_counted() {
    let (_d, p) = script("fn on_reading(r) {\n  emit(r);\n  let x = r.value / 0;\n}");
    let mut e = engine_for(&[p]);
    for i in 1..=3 {
        let (out, f) = run(&mut e, &reading("d", "p", Value::Int(1), i));
        assert!(out.is_empty());
        assert_eq!(f[0].errors_total, i as u64);
        assert!(
            f[0].error.to_string().contains("t.rhai:3:"),
            "{}",
            f[0].error
        );
    }
    let c = &e.counters()[0].1;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((c.calls.load(Relaxed), c.errors.load(Relaxed)), (3, 3));
}

#[test]
fn a_runaway_loop_is_stopped_counted_and_the_next_reading_runs() {
    let text = "fn on_reading(r) {\n  if r.value == 0 { loop { } }\n  emit(r);\n}";
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    let (out, f) = run(&mut e, &reading("d", "p", Value::Int(0), 1));
    assert!(out.is_empty());
    assert!(f[0].error.is_limit(), "{}", f[0].error);
    let (out, f) = run(&mut e, &reading("d", "p", Value::Int(1), 2));
    assert!(f.is_empty());
    assert_eq!(out.len(), 1);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(e.counters()[0].1.limit_exceeded.load(Relaxed), 1);
}

#[test]
fn state_lives_between_calls_per_script() {
    let count = "fn on_reading(r) {\n  this.n = (this.n ?? 0) + 1;\n  publish(`n`, this.n);\n}";
    let (_d1, a) = script(count);
    let (_d2, b) = script(count);
    let mut e = engine_for(&[a, b]);
    let mut last = Vec::new();
    for i in 0..3 {
        last = run(&mut e, &reading("d", "p", Value::Int(i), i)).0;
    }
    // two scripts, each with its own counter at 3
    let got: Vec<_> = last.iter().map(|p| p.payload.to_vec()).collect();
    assert_eq!(got, vec![b"3".to_vec(), b"3".to_vec()]);
}

#[test]
fn several_scripts_each_see_every_reading_in_order() {
    let (_d1, a) = script("fn on_reading(r) { r.point = \"first\"; emit(r); }");
    let (_d2, b) = script("fn on_reading(r) { publish(\"second\", r.point); }");
    let mut e = engine_for(&[a, b]);
    let (out, _) = run(&mut e, &reading("d", "p", Value::Int(1), 1));
    let got: Vec<_> = out
        .iter()
        .map(|p| (p.topic.clone(), p.payload.to_vec()))
        .collect();
    // the second script sees the original reading, not the first one's copy
    assert_eq!(got[0].0, "gw/d/first");
    assert_eq!(got[1], ("second".to_string(), b"p".to_vec()));
}

#[test]
fn without_scripts_the_default_mapping_applies() {
    let mut e = engine_for(&[]);
    let r = reading("d", "p", Value::Float(1.5), 9);
    let (out, _) = run(&mut e, &r);
    assert_eq!(
        out,
        vec![DefaultMapping::new("gw", &RulesConfig::default()).map(&r)]
    );
}

#[test]
fn now_and_json_helpers_are_available_to_rules() {
    let r = reading("d", "p", Value::String(r#"{"t":21.5,"h":40}"#.into()), 1);
    let text = "fn on_reading(r) {\n  let m = parse_json(r.value);\n  m.at = now() > 0;\n  publish(\"j\", to_json(m));\n}";
    let (out, f) = one(text, &r);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(
        json(&out[0]),
        serde_json::json!({"t": 21.5, "h": 40, "at": true})
    );
}

#[test]
fn globals_and_mixed_arithmetic_behave_as_documented() {
    let r = reading("d", "p", Value::Int(50), 1);
    let text = "const LIMIT = 40;\nfn on_reading(r) {\n  publish(\"x\", `${r.value - 32.0} ${r.unit == \"C\"} ${r.value > global::LIMIT}`);\n}";
    let (out, f) = one(text, &r);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(&out[0].payload[..], b"18.0 false true");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
}

#[test]
fn reload_replaces_good_scripts_and_keeps_the_old_one_when_broken() {
    let (_d, p) = script("fn on_reading(r) { publish(\"v\", \"one\"); }");
    let mut e = engine_for(std::slice::from_ref(&p));
    let payload = |e: &mut RulesEngine| {
        run(e, &reading("d", "p", Value::Int(1), 1)).0[0]
            .payload
            .to_vec()
    };
    assert_eq!(payload(&mut e), b"one");

    write(
        &p,
        "fn on_reading(r) {\n  this.n = 1; publish(\"v\", \"two\");\n}",
    );
    let rel = e.reload();
    assert!(matches!(rel[0], Reloaded::Replaced { .. }), "{rel:?}");
    assert_eq!(payload(&mut e), b"two");

    write(&p, "fn on_reading(r) {\n  publish(\"v\", \"three\"\n}");
    let rel = e.reload();
    match &rel[0] {
        Reloaded::Kept { error, .. } => assert!(error.to_string().contains("t.rhai:3:"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(payload(&mut e), b"two", "the old version keeps running");

    write(&p, "fn not_the_entry(r) { }");
    assert!(matches!(e.reload()[0], Reloaded::Kept { .. }));
    assert_eq!(payload(&mut e), b"two");
    use std::sync::atomic::Ordering::Relaxed;
    let c = &e.counters()[0].1;
    assert_eq!(
        (c.reloads.load(Relaxed), c.reload_failures.load(Relaxed)),
        (1, 2)
    );
}
