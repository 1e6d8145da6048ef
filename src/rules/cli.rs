//! `fieldgate rules test`: feeds readings given on the command line through
//! the configured rules and shows what would be published, without starting
//! the broker, devices or anything else.
//!
//! Owns the reading syntax of the command line and the report's wording.
//! Must not start tasks or touch the network.

use std::fmt::Write;
use std::time::Duration;

use super::RulesConfig;
use super::RulesEngine;
use crate::reading::{Publish, Quality, Reading, Value, now_ms};
use crate::script::ScriptError;

/// Why `rules test` could not run.
#[derive(Debug, thiserror::Error)]
pub enum RulesTestError {
    #[error(
        "bad reading {arg:?}: {reason} (write device/point=value, e.g. boiler/temperature=21.5 or boiler/temperature=\"21.5 °C\")"
    )]
    BadReading { arg: String, reason: &'static str },
    #[error("rule script does not compile: {0}")]
    Script(#[from] ScriptError),
}

/// What `rules test` found.
pub struct TestReport {
    /// The report for the terminal.
    pub text: String,
    /// Script calls that failed.
    pub failures: usize,
}

/// Parses `device/point=value`. The value is `true`/`false`, an integer, a
/// float, a number followed by a unit (`21.5 °C`), a JSON string, or else
/// taken as a string.
pub fn parse_reading(arg: &str, ts: i64) -> Result<Reading, RulesTestError> {
    let bad = |reason| RulesTestError::BadReading {
        arg: arg.to_string(),
        reason,
    };
    let (key, text) = arg.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let (device, point) = key
        .split_once('/')
        .ok_or_else(|| bad("no `/` between device and point"))?;
    if device.is_empty() || point.is_empty() || point.contains('/') {
        return Err(bad("want exactly one device and one point"));
    }
    let (value, unit) = parse_value(text.trim());
    Ok(Reading {
        device: device.into(),
        point: point.into(),
        value,
        unit: unit.map(Into::into),
        ts,
        quality: Quality::Good,
    })
}

fn parse_value(text: &str) -> (Value, Option<&str>) {
    let number = |t: &str| {
        t.parse::<i64>()
            .map(Value::Int)
            .ok()
            .or_else(|| t.parse::<f64>().ok().map(Value::Float))
    };
    if let Some(v) = number(text) {
        return (v, None);
    }
    match text {
        "true" => return (Value::Bool(true), None),
        "false" => return (Value::Bool(false), None),
        _ => {}
    }
    if let Some((n, unit)) = text.split_once(char::is_whitespace)
        && let Some(v) = number(n)
    {
        return (v, Some(unit.trim()));
    }
    if let Ok(serde_json::Value::String(s)) = serde_json::from_str(text) {
        return (Value::String(s), None);
    }
    (Value::String(text.to_string()), None)
}

/// Runs `readings` through the rules `cfg` (from the config file at
/// `config_file`), `every` apart in reading time (starting now), and
/// reports every publish and script error.
pub fn test(
    gateway: &str,
    cfg: &RulesConfig,
    config_file: &std::path::Path,
    readings: &[String],
    every: Duration,
) -> Result<TestReport, RulesTestError> {
    let (mut engine, mut errors) = RulesEngine::from_config(gateway, cfg, config_file);
    if !errors.is_empty() {
        return Err(errors.swap_remove(0).into());
    }
    let start = now_ms();
    let step = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    let parsed = readings
        .iter()
        .enumerate()
        .map(|(i, a)| parse_reading(a, start.saturating_add(step.saturating_mul(i as i64))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut text = String::new();
    if !engine.has_scripts() {
        let _ = writeln!(text, "(no rules.scripts: the default mapping applies)");
    }
    let mut failures = 0;
    let mut out = Vec::new();
    for r in &parsed {
        let unit = r
            .unit
            .as_deref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "reading {}/{}={}{unit} (ts {})",
            r.device, r.point, r.value, r.ts
        );
        let fails = engine.process(r, &mut out);
        for f in &fails {
            let _ = writeln!(text, "  error   {}", f.error);
        }
        failures += fails.len();
        if out.is_empty() && fails.is_empty() {
            let _ = writeln!(
                text,
                "  {}",
                if engine.groups_by_device() {
                    "(held for its device's message: payload per_device)"
                } else {
                    "(nothing published)"
                }
            );
        }
        write_publishes(&mut text, &mut out);
    }
    // `payload: per_device`: the groups the readings left open
    engine.flush_all(&mut out);
    if !out.is_empty() {
        let _ = writeln!(text, "end of readings (per_device: the open groups)");
    }
    write_publishes(&mut text, &mut out);
    Ok(TestReport { text, failures })
}

/// One `publish` line per message of `out`, which it empties.
fn write_publishes(text: &mut String, out: &mut Vec<Publish>) {
    for p in out.drain(..) {
        let _ = writeln!(
            text,
            "  publish {} qos={} retain={} {}",
            p.topic,
            p.qos.as_u8(),
            p.retain,
            String::from_utf8_lossy(&p.payload)
        );
    }
}
