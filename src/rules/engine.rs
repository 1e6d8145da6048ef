//! The rules engine: the configured scripts, their state, and one
//! [`RulesEngine::process`] per reading.
//!
//! Several scripts: each script's `on_reading(r)` sees every reading, in
//! the order the scripts are listed, each with its own copy of the reading
//! and its own state; their publishes go out in that order. Without scripts
//! the default mapping applies. A call that fails publishes nothing (its
//! publishes so far are discarded), is counted, and is returned to the
//! caller to log; the other scripts still run.
//!
//! Owns script slots, per-script state (`this`) and counters. Must not
//! block on channels or log per reading (the stage, `run` and its worker,
//! does that), so that the CLI (`fieldgate rules test`) and benchmarks can
//! drive it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rhai::{Dynamic, Engine};

use super::script_functions::{self, Defaults, SharedCtx};
use super::script_reading::ScriptReading;
use super::{DefaultMapping, Grouping, RulesConfig, TopicTemplate, device_template};
use crate::ports::points::DeviceSpec;
use crate::reading::{Publish, Reading};
use crate::script::{self, Script, ScriptError};

/// The function every rule script defines.
pub const ENTRY: &str = "on_reading";

/// Counters of one script, readable while the stage runs.
#[derive(Debug, Default)]
pub struct ScriptCounters {
    /// Calls of `on_reading`.
    pub calls: AtomicU64,
    /// Calls that failed (including limits).
    pub errors: AtomicU64,
    /// Calls stopped by a sandbox limit (also counted in `errors`).
    pub limit_exceeded: AtomicU64,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Reloads that kept the old version because the new one did not compile.
    pub reload_failures: AtomicU64,
}

pub(super) struct Slot {
    /// The configured path, resolved against the config file's folder.
    pub path: PathBuf,
    /// How messages name the file.
    pub name: Arc<str>,
    /// `None` while the file has never compiled (only after a start-up race
    /// with an edit: `fieldgate check` and config loading compile it first).
    pub script: Option<Script>,
    /// `this` of the script.
    pub state: Dynamic,
    pub counters: Arc<ScriptCounters>,
}

/// One failed call, for the caller to log.
#[derive(Debug)]
pub struct Failure {
    /// Position of the script in `rules.scripts`.
    pub index: usize,
    pub script: Arc<str>,
    pub error: ScriptError,
    /// Errors of this script so far, this one included.
    pub errors_total: u64,
}

/// Scripts, their state and the helpers' memory.
pub struct RulesEngine {
    pub(super) engine: Engine,
    pub(super) slots: Vec<Slot>,
    ctx: SharedCtx,
    mapping: DefaultMapping,
    /// What the default mapping publishes when there are no scripts
    /// (with scripts: `PerPoint`, for `emit(r)`).
    unscripted: Unscripted,
}

/// `rules.payload` as the engine applies it without scripts.
enum Unscripted {
    /// One message per reading ([`DefaultMapping::map`]).
    PerPoint,
    /// One message per device per poll.
    PerDevice(Grouping),
    /// Nothing (`payload: none`): the batch only goes onward.
    Nothing,
}

fn empty_state() -> Dynamic {
    Dynamic::from_map(rhai::Map::new())
}

/// Compiles a rule script with `engine` and checks it defines `on_reading(r)`.
pub(super) fn compile(
    engine: &Engine,
    path: &std::path::Path,
    name: &str,
) -> Result<Script, ScriptError> {
    let s = Script::compile_file(engine, path, name)?;
    s.require_fn(ENTRY, 1)?;
    Ok(s)
}

impl RulesEngine {
    /// Builds the engine for `cfg` (the `rules:` of the config file at
    /// `config_file`), compiling every script. Scripts that fail to compile
    /// are returned as errors and left empty (they publish nothing until a
    /// reload compiles them).
    pub fn from_config(
        gateway: &str,
        cfg: &RulesConfig,
        config_file: &Path,
    ) -> (RulesEngine, Vec<ScriptError>) {
        let paths = cfg
            .scripts
            .iter()
            .map(|p| crate::config::resolve_path(config_file, p))
            .collect();
        Self::new(gateway, cfg, paths)
    }

    /// Builds the engine for resolved script `paths`.
    pub fn new(
        gateway: &str,
        cfg: &RulesConfig,
        paths: Vec<PathBuf>,
    ) -> (RulesEngine, Vec<ScriptError>) {
        let defaults = Arc::new(Defaults {
            gateway: gateway.to_string(),
            topic: TopicTemplate::parse(&cfg.topic),
            qos: cfg.qos,
            retain: cfg.retain,
        });
        let ctx = SharedCtx::default();
        let mut engine = script::engine(&cfg.limits);
        script_functions::register(&mut engine, defaults, ctx.clone());
        let mut errors = Vec::new();
        let slots: Vec<Slot> = paths
            .into_iter()
            .map(|path| {
                let name: Arc<str> = path.display().to_string().into();
                let script = compile(&engine, &path, &name)
                    .map_err(|e| errors.push(e))
                    .ok();
                Slot {
                    path,
                    name,
                    script,
                    state: empty_state(),
                    counters: Arc::default(),
                }
            })
            .collect();
        script_functions::lock(&ctx).helpers = slots.iter().map(|_| Default::default()).collect();
        let unscripted = match cfg.payload {
            _ if !slots.is_empty() => Unscripted::PerPoint,
            super::Payload::PerPoint => Unscripted::PerPoint,
            super::Payload::PerDevice => Unscripted::PerDevice(Grouping::new(
                gateway,
                &device_template(&cfg.topic),
                cfg.qos,
                cfg.retain,
            )),
            super::Payload::None => Unscripted::Nothing,
        };
        let engine = RulesEngine {
            engine,
            slots,
            ctx,
            mapping: DefaultMapping::new(gateway, cfg),
            unscripted,
        };
        (engine, errors)
    }

    /// Whether scripts are configured (otherwise the default mapping applies).
    pub fn has_scripts(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The scripts' names and counters, in order.
    pub fn counters(&self) -> Vec<(Arc<str>, Arc<ScriptCounters>)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.counters.clone()))
            .collect()
    }

    /// Whether readings are grouped per device (`payload: per_device`, no scripts).
    pub fn groups_by_device(&self) -> bool {
        matches!(self.unscripted, Unscripted::PerDevice(_))
    }

    /// The per-device groups, when readings are grouped per device.
    fn grouping(&mut self) -> Option<&mut Grouping> {
        match &mut self.unscripted {
            Unscripted::PerDevice(g) => Some(g),
            _ => None,
        }
    }

    /// Declares the configured devices (`payload: per_device` expects
    /// their points in every poll; without it this does nothing).
    pub fn set_devices(&mut self, devices: &[DeviceSpec]) {
        if let Some(g) = self.grouping() {
            g.set_devices(devices);
        }
    }

    /// When the per-device group waiting longest for missing points is
    /// due ([`Self::flush_due`]); `None` when none waits.
    pub fn next_flush(&self) -> Option<std::time::Instant> {
        match &self.unscripted {
            Unscripted::PerDevice(g) => g.next_due(),
            _ => None,
        }
    }

    /// Publishes the per-device groups due at `now` into `out`.
    pub fn flush_due(&mut self, now: std::time::Instant, out: &mut Vec<Publish>) {
        if let Some(g) = self.grouping() {
            g.flush_due(now, out);
        }
    }

    /// Publishes every per-device group that holds readings into `out`.
    pub fn flush_all(&mut self, out: &mut Vec<Publish>) {
        if let Some(g) = self.grouping() {
            g.flush_all(out);
        }
    }

    /// [`RulesEngine::process`] of a batch without scripts (`false`, and
    /// nothing done, when there are scripts): with `payload: per_device`
    /// each device's run of readings joins its group, the group found once
    /// per run; with `payload: none` nothing is published.
    pub fn process_unscripted(&mut self, batch: &[Reading], out: &mut Vec<Publish>) -> bool {
        if !self.slots.is_empty() {
            return false;
        }
        let grouping = match &mut self.unscripted {
            Unscripted::PerPoint => {
                out.extend(batch.iter().map(|r| self.mapping.map(r)));
                return true;
            }
            Unscripted::Nothing => return true,
            Unscripted::PerDevice(g) => g,
        };
        let mapping = &self.mapping;
        for run in batch.chunk_by(Reading::same_device) {
            let mut refused = Vec::new();
            grouping.push_run(run, out, |r| refused.push(mapping.map(r)));
            out.append(&mut refused);
        }
        true
    }

    /// Runs every script on `r`, appending what they publish to `out`.
    /// Returns the calls that failed. With `payload: per_device` (and no
    /// scripts) `r` joins its device's group, and `out` gets the groups
    /// it completes; with `payload: none` (and no scripts) nothing.
    pub fn process(&mut self, r: &Reading, out: &mut Vec<Publish>) -> Vec<Failure> {
        if self.slots.is_empty() {
            let taken = match &mut self.unscripted {
                Unscripted::Nothing => true,
                Unscripted::PerDevice(g) => g.push(r, out),
                Unscripted::PerPoint => false,
            };
            if !taken {
                out.push(self.mapping.map(r));
            }
            return Vec::new();
        }
        let mut failures = Vec::new();
        let sr = ScriptReading::new(r);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(script) = &slot.script else { continue };
            script_functions::lock(&self.ctx).script = i;
            slot.counters.calls.fetch_add(1, Ordering::Relaxed);
            let result = script.call(
                &self.engine,
                &mut slot.state,
                ENTRY,
                (Dynamic::from(sr.clone()),),
            );
            let mut ctx = script_functions::lock(&self.ctx);
            match result {
                Ok(_) => out.append(&mut ctx.out),
                Err(error) => {
                    ctx.out.clear();
                    if matches!(error, ScriptError::StateTooLarge { .. }) {
                        slot.state = empty_state();
                    }
                    if error.is_limit() {
                        slot.counters.limit_exceeded.fetch_add(1, Ordering::Relaxed);
                    }
                    let errors_total = slot.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    rule_errors()
                        .get_or_create(&crate::metrics::labels("script", &slot.name))
                        .inc();
                    failures.push(Failure {
                        index: i,
                        script: slot.name.clone(),
                        error,
                        errors_total,
                    });
                }
            }
        }
        script_functions::lock(&self.ctx).last.update(r);
        failures
    }

    /// Forgets the publishes of a call that did not finish (after a panic
    /// the stage caught), so they cannot leak into the next reading's.
    pub fn discard_pending(&mut self) {
        script_functions::lock(&self.ctx).out.clear();
    }

    /// Readings the helpers let through untracked because their memory was
    /// full, and readings `last` did not remember (see `state.rs`).
    pub fn untracked(&self) -> u64 {
        let ctx = script_functions::lock(&self.ctx);
        ctx.helpers.iter().map(|h| h.untracked).sum::<u64>() + ctx.last.untracked
    }
}

/// `fieldgate_rule_errors`: script errors (compile at reload, or run
/// time), per script; registered when the rules stage starts.
pub(crate) fn rule_errors() -> &'static crate::metrics::CounterFamily {
    static ERRORS: std::sync::LazyLock<crate::metrics::CounterFamily> =
        std::sync::LazyLock::new(|| {
            crate::metrics::get().register(
                "rule_errors",
                "Rule script errors",
                crate::metrics::CounterFamily::default(),
            )
        });
    &ERRORS
}

#[cfg(test)]
mod tests {
    //! Tests of the example scripts in plugins/: each feeds readings and checks
    //! what would be published.

    use std::path::PathBuf;

    use crate::reading::{Quality, Value};
    use crate::rules::tests::{engine_for, reading, run};
    use crate::rules::*;

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
}
