//! The rules stage: turns [`Reading`]s into [`Publish`]es, through Rhai
//! scripts (`fn on_reading(r)`, docs/design.md) or, without scripts, the
//! default mapping (per point, or per device per poll with
//! `payload: per_device`).
//!
//! Owns `RulesConfig`, what scripts can call, their state, reload on
//! SIGHUP, the stage loop (on its own thread with scripts) and `fieldgate rules test`. Must not talk to devices or the
//! broker: it reads one channel and writes another.

pub mod cli;
mod engine;
mod grouping;
mod mapping;
mod reload;
mod script_functions;
mod script_reading;
mod stage;
mod state;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{error, info, info_span};

pub use engine::{ENTRY, Failure, RulesEngine, ScriptCounters};
pub use grouping::Grouping;
pub use mapping::{TopicTemplate, device_template};
pub use reload::{Reloaded, answer_hangups_without_stage};
pub use script_reading::ScriptReading;
pub use stage::Onward;

use crate::config::Report;
use crate::ports::points::DeviceSpec;
use crate::reading::batch::ReadingsReceiver;
use crate::reading::{Publish, Qos, Reading};
use crate::script::Limits;

/// Batches queued in the readings channel go to the script worker together
/// while they hold fewer readings than this (a single batch may be larger:
/// it is never split).
pub const BATCH: usize = 256;
/// Batches queued for the worker (bounded: back-pressure, no drops).
pub const WORK_CAPACITY: usize = 4;

/// `rules:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rhai scripts, relative to the config file's folder; each defines
    /// `fn on_reading(r)` and sees every reading, in this order.
    pub scripts: Vec<PathBuf>,
    /// Topic template with `{gateway}`, `{device}`, `{point}`.
    pub topic: String,
    pub qos: Qos,
    pub retain: bool,
    /// One message per point, or per device per poll (default mapping only).
    pub payload: Payload,
    /// Sandbox limits of every call.
    pub limits: Limits,
}

/// `rules.payload`: how the default mapping turns readings into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// One message per reading on `rules.topic`.
    #[default]
    PerPoint,
    /// One message per device per poll on the device topic
    /// ([`device_template`]), every point in it (`grouping.rs`).
    PerDevice,
    /// No message for readings: for a gateway whose readings leave as
    /// Sparkplug B only. Scripts still publish what they emit.
    None,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            scripts: Vec::new(),
            topic: "{gateway}/{device}/{point}".to_string(),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: Payload::PerPoint,
            limits: Limits::default(),
        }
    }
}

impl RulesConfig {
    /// Whether readings are grouped per device: `payload: per_device`
    /// applies to the default mapping only, not to what scripts emit.
    pub fn groups_by_device(&self) -> bool {
        self.payload == Payload::PerDevice && self.scripts.is_empty()
    }

    /// Whether the default mapping publishes nothing: `payload: none`
    /// and no scripts (scripts publish what they emit, whatever the
    /// payload setting).
    pub fn publishes_no_readings(&self) -> bool {
        self.payload == Payload::None && self.scripts.is_empty()
    }

    /// Checks the limits and compiles every script (a compile error names
    /// `file:line:column`).
    pub(crate) fn validate(&self, config_file: &Path, path: &str, report: &mut Report) {
        self.limits.validate(&format!("{path}.limits"), report);
        if self.scripts.is_empty() {
            return;
        }
        let engine = crate::script::engine(&self.limits);
        for (i, p) in self.scripts.iter().enumerate() {
            let resolved = crate::config::resolve_path(config_file, p);
            let name = resolved.display().to_string();
            if let Err(e) = engine::compile(&engine, &resolved, &name) {
                report.add(format!("{path}.scripts[{i}]"), e.to_string());
            }
        }
    }
}

/// The default mapping of docs/design.md §4: topic from the template, JSON payload,
/// the configured QoS and retain flag.
pub struct DefaultMapping {
    gateway: String,
    topic: TopicTemplate,
    /// `payload: per_device` without scripts: the device topic.
    device_topic: Option<TopicTemplate>,
    qos: Qos,
    retain: bool,
}

impl DefaultMapping {
    pub fn new(gateway: &str, cfg: &RulesConfig) -> Self {
        DefaultMapping {
            gateway: gateway.to_string(),
            topic: TopicTemplate::parse(&cfg.topic),
            device_topic: cfg
                .groups_by_device()
                .then(|| TopicTemplate::parse(&device_template(&cfg.topic))),
            qos: cfg.qos,
            retain: cfg.retain,
        }
    }

    /// Where a device's point is published by default: its own topic, or
    /// with `payload: per_device` the device topic (the point is a member
    /// of that message's `points`).
    pub fn topic(&self, device: &str, point: &str) -> String {
        match &self.device_topic {
            Some(t) => t.render(&self.gateway, device, point),
            None => self.topic.render(&self.gateway, device, point),
        }
    }

    /// One message for one reading (`payload: per_point`).
    pub fn map(&self, r: &Reading) -> Publish {
        Publish {
            topic: self.topic.render(&self.gateway, &r.device, &r.point),
            payload: r.to_payload(),
            qos: self.qos,
            retain: self.retain,
        }
    }
}

/// Runs the stage until `readings` closes (all sources stopped), then
/// returns once every reading received was processed; dropping `out` lets
/// the next stage finish in turn. `devices` are the configured devices:
/// with `payload: per_device` their points are expected in every poll.
///
/// Scripts run on a blocking thread (see `stage.rs`); this task forwards
/// readings in batches and turns SIGHUP into a reload (see `reload.rs`).
/// Without scripts the default mapping runs on this task. Each batch,
/// once mapped, goes to `onward` (the Sparkplug node's queue).
pub async fn run(
    gateway: &str,
    cfg: &RulesConfig,
    config_file: &Path,
    devices: &[DeviceSpec],
    mut readings: ReadingsReceiver,
    out: mpsc::Sender<Publish>,
    mut onward: Onward,
) {
    // the stage's metric exists from its start
    engine::rule_errors();
    let mut hup = reload::hangups();
    let (mut engine, errors) = RulesEngine::from_config(gateway, cfg, config_file);
    engine.set_devices(devices);
    for e in &errors {
        // Config loading compiled them a moment ago: the file changed since.
        error!("rule script not loaded (send SIGHUP once fixed): {e}");
    }
    if engine.has_scripts() {
        let names: Vec<_> = engine.counters().into_iter().map(|(n, _)| n).collect();
        info!(scripts = ?names, "rules: scripts loaded");
    } else {
        if cfg.groups_by_device() {
            info!(topic = %device_template(&cfg.topic), "rules: default mapping, one message per device per poll");
        } else {
            info!(topic = %cfg.topic, "rules: default mapping");
        }
        // nothing can block: on this task, no thread to wake per batch
        stage::mapping_only(engine, &mut readings, &out, &mut onward, &mut hup).await;
        return;
    }
    let (work_tx, work_rx) = mpsc::channel(WORK_CAPACITY);
    let span = info_span!("rules-worker");
    let worker = tokio::task::spawn_blocking(move || {
        span.in_scope(|| stage::worker(engine, work_rx, out, onward))
    });
    loop {
        tokio::select! {
            batch = readings.recv() => {
                let Some(batch) = batch else { break };
                // take what else is queued along (small batches: serial,
                // simulated), without copying readings
                let mut held = batch.len();
                let mut batches = vec![batch];
                while held < BATCH {
                    let Some(more) = readings.try_recv() else { break };
                    held += more.len();
                    batches.push(more);
                }
                if work_tx.send(stage::Work::Batch(batches)).await.is_err() {
                    break;
                }
            }
            () = reload::next_hangup(&mut hup) => {
                info!("SIGHUP: reloading rule scripts");
                if work_tx.send(stage::Work::Reload).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(work_tx);
    if let Err(e) = worker.await {
        error!("rules worker failed: {e}");
    }
}

#[cfg(test)]
mod tests {
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
    fn payload_none_publishes_no_reading_but_scripts_still_emit() {
        let none = RulesConfig {
            payload: Payload::None,
            ..RulesConfig::default()
        };
        let r = reading("d", "p", Value::Float(1.5), 9);
        let (mut e, errors) = RulesEngine::new("gw", &none, Vec::new());
        assert!(errors.is_empty(), "{errors:?}");
        let (out, _) = run(&mut e, &r);
        assert!(out.is_empty(), "{out:?}");
        let mut out = Vec::new();
        assert!(e.process_unscripted(&[r.clone(), r.clone()], &mut out));
        assert!(out.is_empty(), "{out:?}");
        assert!(!e.groups_by_device() && e.next_flush().is_none());

        let (_d, p) = script("fn on_reading(r) { emit(r); }");
        let (mut e, errors) = RulesEngine::new("gw", &none, vec![p]);
        assert!(errors.is_empty(), "{errors:?}");
        let (out, f) = run(&mut e, &r);
        assert!(f.is_empty(), "{f:?}");
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
            Reloaded::Kept { error, .. } => {
                assert!(error.to_string().contains("t.rhai:3:"), "{error}")
            }
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
}
