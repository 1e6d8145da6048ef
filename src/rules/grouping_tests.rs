//! Tests of `payload: per_device` (`grouping.rs`) through the engine: the
//! exact message, when a poll's group is published, missing points.

use std::time::{Duration, Instant};

use super::*;
use crate::ports::points::{DeviceSpec, PointKind, PointSpec};
use crate::reading::{Value, clock};

fn spec(device: &str, points: &[(&str, Option<&str>)], poll: Duration) -> DeviceSpec {
    DeviceSpec {
        name: device.to_string(),
        kind: "modbus-tcp",
        poll: Some(poll),
        points: points
            .iter()
            .map(|(n, u)| PointSpec {
                name: n.to_string(),
                unit: u.map(str::to_string),
                kind: PointKind::Float,
                writable: false,
                write_range: (None, None),
            })
            .collect(),
    }
}

fn reading(device: &str, point: &str, value: Value, unit: Option<&str>, ts: i64) -> Reading {
    Reading {
        unit: unit.map(Into::into),
        ..super::tests::reading(device, point, value, ts)
    }
}

fn per_device(topic: &str, devices: &[DeviceSpec]) -> RulesEngine {
    let cfg = RulesConfig {
        topic: topic.to_string(),
        payload: Payload::PerDevice,
        ..RulesConfig::default()
    };
    let (mut e, errors) = RulesEngine::new("gw", &cfg, Vec::new());
    assert!(errors.is_empty());
    e.set_devices(devices);
    e
}

fn feed(e: &mut RulesEngine, rs: &[Reading]) -> Vec<Publish> {
    let mut out = Vec::new();
    for r in rs {
        assert!(e.process(r, &mut out).is_empty());
    }
    out
}

#[test]
fn a_complete_poll_is_one_message_with_every_point_in_configured_order() {
    clock::set_check(false);
    let boiler = spec(
        "boiler",
        &[("temp", Some("°C")), ("pump", None), ("label", None)],
        Duration::from_secs(1),
    );
    let mut e = per_device("{gateway}/{device}/{point}", &[boiler]);
    // replies come in request order, not config order
    let out = feed(
        &mut e,
        &[
            reading("boiler", "pump", Value::Bool(true), None, 10),
            reading("boiler", "label", Value::String("P\"7".into()), None, 10),
        ],
    );
    assert!(out.is_empty(), "published before the poll was complete");
    let out = feed(
        &mut e,
        &[reading(
            "boiler",
            "temp",
            Value::Float(21.5),
            Some("°C"),
            12,
        )],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "gw/boiler");
    assert_eq!(
        std::str::from_utf8(&out[0].payload).unwrap(),
        r#"{"device":"boiler","ts":12,"points":{"temp":{"value":21.5,"unit":"°C","ts":12,"quality":"good"},"pump":{"value":true,"ts":10,"quality":"good"},"label":{"value":"P\"7","ts":10,"quality":"good"}}}"#
    );
    assert_eq!(out[0].qos, Qos::AtLeastOnce);
    assert!(!out[0].retain);
    assert!(e.next_flush().is_none(), "nothing left waiting");
}

#[test]
fn a_point_missing_from_a_poll_is_listed_bad_when_the_next_poll_begins() {
    clock::set_check(false);
    let dev = spec(
        "d",
        &[("a", Some("V")), ("b", Some("A"))],
        Duration::from_secs(60),
    );
    let mut e = per_device("{gateway}/{device}/{point}", &[dev]);
    assert!(feed(&mut e, &[reading("d", "a", Value::Int(1), Some("V"), 5)]).is_empty());
    assert!(e.next_flush().is_some(), "the group waits with a deadline");
    // `a` again: the poll of ts 5 is over, without `b`
    let out = feed(&mut e, &[reading("d", "a", Value::Int(2), Some("V"), 6)]);
    assert_eq!(out.len(), 1);
    let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(
        m,
        serde_json::json!({"device": "d", "ts": 5, "points": {
            "a": {"value": 1, "unit": "V", "ts": 5, "quality": "good"},
            "b": {"value": null, "unit": "A", "ts": 5, "quality": "bad"},
        }})
    );
}

#[test]
fn an_incomplete_group_is_published_at_its_deadline_and_at_the_end() {
    clock::set_check(false);
    let dev = spec("d", &[("a", None), ("b", None)], Duration::from_millis(100));
    let mut e = per_device("{gateway}/{device}/{point}", &[dev]);
    let start = Instant::now();
    assert!(feed(&mut e, &[reading("d", "a", Value::Int(1), None, 5)]).is_empty());
    let due = e.next_flush().expect("a deadline");
    assert!(
        due >= start + Duration::from_millis(100),
        "the grace is the poll interval"
    );
    let mut out = Vec::new();
    e.flush_due(due - Duration::from_millis(1), &mut out);
    assert!(out.is_empty(), "published before its deadline");
    e.flush_due(due, &mut out);
    assert_eq!(out.len(), 1);
    let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(m["points"]["b"]["quality"], "bad");
    assert!(e.next_flush().is_none());
    // the stage's end publishes what is left
    assert!(feed(&mut e, &[reading("d", "b", Value::Int(3), None, 9)]).is_empty());
    let mut out = Vec::new();
    e.flush_all(&mut out);
    assert_eq!(out.len(), 1);
    let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(m["points"]["a"]["quality"], "bad");
    assert_eq!(m["points"]["b"]["value"], 3);
}

#[test]
fn unconfigured_devices_learn_their_points_then_group_by_poll() {
    clock::set_check(false);
    let mut e = per_device("site/{gateway}/{device}-{point}/v", &[]);
    let poll = |v: i64| {
        [
            reading("s", "x", Value::Int(v), None, v),
            reading("s", "y", Value::Int(v), None, v),
        ]
    };
    // first poll: the points are not known yet, the repeat ends it
    assert!(feed(&mut e, &poll(1)).is_empty());
    let out = feed(&mut e, &poll(2));
    assert_eq!(out.len(), 2, "poll 1 at the repeat, poll 2 once complete");
    assert_eq!(out[0].topic, "site/gw/s");
    for (m, v) in out.iter().zip([1, 2]) {
        let m: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(m["points"]["x"]["value"], v);
        assert_eq!(m["points"]["y"]["value"], v);
    }
}

#[test]
fn devices_are_grouped_apart_and_per_point_is_unchanged() {
    clock::set_check(false);
    let devices = [
        spec("a", &[("p", None)], Duration::from_secs(1)),
        spec("b", &[("p", None)], Duration::from_secs(1)),
    ];
    let mut e = per_device("{gateway}/{device}/{point}", &devices);
    let out = feed(
        &mut e,
        &[
            reading("a", "p", Value::Int(1), None, 1),
            reading("b", "p", Value::Int(2), None, 1),
        ],
    );
    let topics: Vec<_> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["gw/a", "gw/b"]);

    let (mut e, _) = RulesEngine::new("gw", &RulesConfig::default(), Vec::new());
    e.set_devices(&devices);
    let out = feed(&mut e, &[reading("a", "p", Value::Int(1), None, 1)]);
    assert_eq!(out[0].topic, "gw/a/p");
    assert_eq!(
        &out[0].payload[..],
        br#"{"value":1,"ts":1,"quality":"good"}"#
    );
}

#[test]
fn scripts_publish_per_reading_whatever_the_payload_setting() {
    let (_dir, path) = super::tests::script("fn on_reading(r) { emit(r); }");
    let cfg = RulesConfig {
        scripts: vec![path.clone()],
        payload: Payload::PerDevice,
        ..RulesConfig::default()
    };
    assert!(!cfg.groups_by_device());
    let (mut e, errors) = RulesEngine::new("gw", &cfg, vec![path]);
    assert!(errors.is_empty());
    let out = feed(&mut e, &[reading("a", "p", Value::Int(1), None, 1)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "gw/a/p");
}

#[test]
fn payload_values_other_than_the_two_are_config_errors() {
    let path = std::path::Path::new("/tmp/fieldgate.yaml");
    let Err(err) =
        crate::settings::parse("gateway:\n  id: gw\nrules:\n  payload: per_devices\n", path)
    else {
        panic!("an unknown payload was accepted");
    };
    let err = err.to_string();
    assert!(err.contains("rules.payload"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    let cfg = crate::settings::parse("gateway:\n  id: gw\nrules:\n  payload: per_device\n", path)
        .expect("valid");
    assert_eq!(cfg.rules.payload, Payload::PerDevice);
}

#[test]
fn rules_test_shows_the_grouped_messages() {
    let cfg = RulesConfig {
        payload: Payload::PerDevice,
        ..RulesConfig::default()
    };
    let readings = ["d/a=1", "d/b=2 V", "d/a=3"].map(String::from);
    let report = super::cli::test(
        "gw",
        &cfg,
        std::path::Path::new("/tmp/fieldgate.yaml"),
        &readings,
        Duration::from_secs(1),
    )
    .expect("runs");
    let text = report.text;
    assert_eq!(text.matches("publish gw/d qos=1").count(), 2, "{text}");
    assert!(text.contains("(held for its device's message"), "{text}");
    assert!(text.contains("end of readings (per_device"), "{text}");
    assert!(text.contains(r#""b":{"value":2,"unit":"V""#), "{text}");
}
