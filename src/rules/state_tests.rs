//! Unit tests of the rule helpers that remember between calls
//! (`deadband`, `rate_limit`, `last`; `state.rs` and `api.rs`).

use super::RulesEngine;
use super::tests::{engine_for, one, reading, run, script};
use crate::reading::Value;

#[test]
fn deadband_passes_changes_of_at_least_delta() {
    let text = "fn on_reading(r) { if deadband(r, 0.5) { emit(r); } }";
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    let vals = [10.0, 10.2, 10.49, 10.5, 10.1, 9.9, 9.99];
    let passed: Vec<f64> = vals
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            !run(&mut e, &reading("d", "p", Value::Float(**v), *i as i64))
                .0
                .is_empty()
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(passed, vec![10.0, 10.5, 9.9]);
    // another point has its own band
    assert_eq!(
        run(&mut e, &reading("d", "q", Value::Float(10.1), 9))
            .0
            .len(),
        1
    );
}

#[test]
fn deadband_with_max_age_and_on_quality_and_text_changes() {
    let text = "fn on_reading(r) { if deadband(r, 1, \"10s\") { emit(r); } }";
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    let mut pass = |v: Value, ts: i64, q: crate::reading::Quality| {
        let mut r = reading("d", "p", v, ts);
        r.quality = q;
        !run(&mut e, &r).0.is_empty()
    };
    use crate::reading::Quality::{Bad, Good};
    assert!(pass(Value::Int(5), 0, Good));
    assert!(!pass(Value::Int(5), 9_999, Good));
    assert!(pass(Value::Int(5), 10_000, Good), "max_age passed");
    assert!(pass(Value::Int(5), 10_001, Bad), "quality changed");
    assert!(
        pass(Value::String("on".into()), 10_002, Bad),
        "type changed"
    );
    assert!(!pass(Value::String("on".into()), 10_003, Bad));
    assert!(pass(Value::String("off".into()), 10_004, Bad));
}

#[test]
fn rate_limit_lets_one_reading_per_period_through() {
    let text = "fn on_reading(r) { if rate_limit(r, 1000) { emit(r); } }";
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    let passed: Vec<i64> = [0, 200, 999, 1000, 1500, 2100, 2200]
        .into_iter()
        .filter(|ts| {
            !run(&mut e, &reading("d", "p", Value::Int(1), *ts))
                .0
                .is_empty()
        })
        .collect();
    assert_eq!(passed, vec![0, 1000, 2100]);
    let text = "fn on_reading(r) {\n if rate_limit(r, \"soon\") { emit(r); } }";
    let (_, f) = one(text, &reading("d", "p", Value::Int(1), 0));
    assert!(f[0].error.to_string().contains("soon"), "{}", f[0].error);
}

#[test]
fn last_gives_the_previous_value_of_any_point() {
    let text = r#"
fn on_reading(r) {
    let v = last("m", "voltage");
    let lr = last_reading("m", "voltage");
    publish("last", if v == () { "none" } else { `${v}@${lr.ts}` });
}"#;
    let (_d, p) = script(text);
    let mut e = engine_for(&[p]);
    let out = |e: &mut RulesEngine, r| run(e, &r).0[0].payload.to_vec();
    assert_eq!(
        out(&mut e, reading("m", "current", Value::Int(2), 1)),
        b"none"
    );
    assert_eq!(
        out(&mut e, reading("m", "voltage", Value::Int(230), 2)),
        b"none",
        "own value is the previous one"
    );
    assert_eq!(
        out(&mut e, reading("m", "current", Value::Int(3), 3)),
        b"230@2"
    );
}
