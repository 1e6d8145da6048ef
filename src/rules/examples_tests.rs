//! Tests of the example scripts in plugins/: each feeds readings and checks
//! what would be published.

use std::path::PathBuf;

use super::tests::{engine_for, reading, run};
use super::*;
use crate::reading::{Quality, Value};

fn plugin(name: &str) -> RulesEngine {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name);
    engine_for(&[p])
}

fn with_unit(mut r: Reading, unit: &str) -> Reading {
    r.unit = Some(unit.into());
    r
}

fn feed(e: &mut RulesEngine, r: Reading) -> Vec<(String, serde_json::Value, u8, bool)> {
    let (out, failures) = run(e, &r);
    assert!(failures.is_empty(), "{failures:?}");
    out.iter()
        .map(|p| {
            let v = serde_json::from_slice(&p.payload).expect("JSON payload");
            (p.topic.clone(), v, p.qos.as_u8(), p.retain)
        })
        .collect()
}

fn approx(v: &serde_json::Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[test]
fn rules_rhai_converts_units_and_renames_topics() {
    let mut e = plugin("rules.rhai");
    let out = feed(
        &mut e,
        with_unit(
            reading("boiler", "temperature", Value::Float(176.0), 1),
            "°F",
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "plant/boiler/temperature");
    assert!(approx(&out[0].1["value"], 80.0), "{:?}", out[0].1);
    assert_eq!(out[0].1["unit"], "°C");

    let out = feed(
        &mut e,
        with_unit(reading("boiler", "pressure", Value::Int(2), 2), "bar"),
    );
    assert!(approx(&out[0].1["value"], 200.0), "{:?}", out[0].1);
    assert_eq!(out[0].1["unit"], "kPa");

    // no unit, or a unit without a conversion: value unchanged, topic renamed
    let out = feed(
        &mut e,
        reading("line1", "mode", Value::String("auto".into()), 3),
    );
    assert_eq!(out[0].0, "plant/line1/mode");
    assert_eq!(out[0].1["value"], "auto");
    let out = feed(
        &mut e,
        with_unit(reading("line1", "speed", Value::Int(900), 4), "rpm"),
    );
    assert_eq!(
        (out[0].1["value"].as_i64(), out[0].1["unit"].as_str()),
        (Some(900), Some("rpm"))
    );
}

#[test]
fn alarm_rhai_raises_and_clears_a_retained_qos2_alarm_with_hysteresis() {
    let mut e = plugin("alarm.rhai");
    let temp = |v: f64, ts| reading("boiler", "temperature", Value::Float(v), ts);
    let alarms = |out: Vec<(String, serde_json::Value, u8, bool)>| {
        assert!(
            out.iter().all(|o| o.0 == "gw/boiler/temperature/alarm"),
            "{out:?}"
        );
        out
    };
    // below the limit: nothing (the script publishes alarms only)
    assert!(feed(&mut e, temp(80.0, 1)).is_empty());

    let a = alarms(feed(&mut e, temp(95.0, 2)));
    assert_eq!(a.len(), 1, "raised");
    assert_eq!((a[0].2, a[0].3), (2, true), "QoS 2, retained");
    assert_eq!(a[0].1["active"], true);
    assert!(approx(&a[0].1["value"], 95.0) && approx(&a[0].1["limit"], 90.0));
    assert_eq!(a[0].1["ts"], 2);

    assert!(
        alarms(feed(&mut e, temp(97.0, 3))).is_empty(),
        "still active: no repeat"
    );
    assert!(
        alarms(feed(&mut e, temp(87.0, 4))).is_empty(),
        "inside the hysteresis"
    );
    let a = alarms(feed(&mut e, temp(84.0, 5)));
    assert_eq!(a.len(), 1, "cleared");
    assert_eq!(a[0].1["active"], false);
    assert_eq!((a[0].2, a[0].3), (2, true));

    // a bad reading never raises it, another point never does
    let mut bad = temp(120.0, 6);
    bad.quality = Quality::Bad;
    assert!(alarms(feed(&mut e, bad)).is_empty());
    assert!(
        feed(
            &mut e,
            reading("boiler", "pressure", Value::Float(500.0), 7)
        )
        .is_empty()
    );
}

#[test]
fn deadband_rhai_publishes_changes_of_0_1_and_a_heartbeat() {
    let mut e = plugin("deadband.rhai");
    let p = |v: f64, ts| reading("boiler", "pressure", Value::Float(v), ts);
    let mut published = Vec::new();
    for (v, ts) in [
        (1.00, 0),
        (1.05, 1_000),
        (1.09, 2_000),
        (1.11, 3_000),
        (1.15, 4_000),
        (1.15, 64_000),
        (0.9, 65_000),
    ] {
        if !feed(&mut e, p(v, ts)).is_empty() {
            published.push(ts);
        }
    }
    // 1.11 moved 0.11; 64 s is a minute after it; 0.9 moved 0.25
    assert_eq!(published, vec![0, 3_000, 64_000, 65_000]);
}

#[test]
fn power_rhai_derives_power_from_voltage_and_current() {
    let mut e = plugin("power.rhai");
    let out = feed(
        &mut e,
        with_unit(reading("meter", "voltage", Value::Float(230.0), 1), "V"),
    );
    assert!(out.is_empty(), "current unknown yet: {out:?}");
    let out = feed(
        &mut e,
        with_unit(reading("meter", "current", Value::Float(2.5), 2), "A"),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "gw/meter/power");
    assert!(approx(&out[0].1["value"], 575.0), "{:?}", out[0].1);
    assert_eq!(out[0].1["unit"], "W");
    assert_eq!(out[0].1["ts"], 2);
    let out = feed(
        &mut e,
        with_unit(reading("meter", "voltage", Value::Float(240.0), 3), "V"),
    );
    assert!(approx(&out[0].1["value"], 600.0), "{:?}", out[0].1);
    // another meter has its own inputs; other points are ignored
    assert!(feed(&mut e, reading("meter2", "current", Value::Int(1), 4)).is_empty());
    assert!(feed(&mut e, reading("meter", "energy", Value::Int(1), 5)).is_empty());
}
