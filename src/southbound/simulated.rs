//! The `simulated` device kind: signals computed from the clock, for demos
//! and tests without hardware.
//!
//! Owns `SimulatedConfig`, its checks, its points and its lines in the
//! plan (the kind's [`Device`]), and signal generation. Must not block:
//! every sample is a few arithmetic operations.

use std::f64::consts::TAU;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use serde::Deserialize;
use tokio::time::{MissedTickBehavior, interval};
use tracing::{Instrument, debug, info_span};

use super::kind::{Device, KindOf, PlanContext, no_checks_together, one_each, read_only};
use super::{Source, SourceContext, SourceFuture};
use crate::config::{Report, TimeSpan};
use crate::ports::points::{PointKind, PointSpec};
use crate::reading::{Reading, Value, now_ms};

/// `kind: simulated`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedConfig {
    pub name: String,
    #[serde(default = "default_poll")]
    pub poll: TimeSpan,
    #[serde(default)]
    pub points: Vec<SimPoint>,
}

fn default_poll() -> TimeSpan {
    TimeSpan::from_secs(1)
}

/// The shape of a simulated signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Sine,
    Ramp,
    Random,
    Counter,
    Constant,
}

/// One simulated point. Which fields apply depends on `signal`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPoint {
    pub name: String,
    pub signal: Signal,
    pub period: Option<TimeSpan>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub start: Option<f64>,
    pub step: Option<f64>,
    pub value: Option<Value>,
    pub unit: Option<String>,
}

impl SimulatedConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        if self.poll.get().is_zero() {
            report.add(format!("{path}.poll"), "must be greater than 0");
        }
        crate::config::check_point_names(path, self.points.iter().map(|p| p.name.as_str()), report);
        for (i, p) in self.points.iter().enumerate() {
            let pp = format!("{path}.points[{i}]");
            let allowed: &[&str] = match p.signal {
                Signal::Sine | Signal::Ramp => &["period", "min", "max"],
                Signal::Random => &["min", "max"],
                Signal::Counter => &["start", "step"],
                Signal::Constant => &["value"],
            };
            let given = [
                ("period", p.period.is_some()),
                ("min", p.min.is_some()),
                ("max", p.max.is_some()),
                ("start", p.start.is_some()),
                ("step", p.step.is_some()),
                ("value", p.value.is_some()),
            ];
            for (field, present) in given {
                if present && !allowed.contains(&field) {
                    report.add(
                        format!("{pp}.{field}"),
                        format!(
                            "`{field}` does not apply to signal {:?} (it takes: {})",
                            p.signal,
                            allowed.join(", ")
                        ),
                    );
                }
            }
            if p.signal == Signal::Constant && p.value.is_none() {
                report.add(format!("{pp}.value"), "signal constant needs `value`");
            }
            if let Some(period) = p.period
                && period.get().is_zero()
            {
                report.add(format!("{pp}.period"), "must be greater than 0");
            }
            if let (Some(lo), Some(hi)) = (p.min, p.max)
                && lo > hi
            {
                report.add(
                    format!("{pp}.min"),
                    format!("min ({lo}) is greater than max ({hi})"),
                );
            }
        }
    }
}

/// `kind: simulated`: one source per device.
pub(crate) const KIND: KindOf<SimulatedConfig> = KindOf {
    name: "simulated",
    check_together: no_checks_together,
    sources: |devices, _| one_each(devices.iter().map(|c| (*c).clone()), Simulated::new),
};

impl Device for SimulatedConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, path: &str, _config_file: &std::path::Path, report: &mut Report) {
        SimulatedConfig::validate(self, path, report)
    }

    fn poll(&self) -> Option<std::time::Duration> {
        Some(self.poll.get())
    }

    fn points(&self) -> Vec<PointSpec> {
        self.points
            .iter()
            .map(|p| {
                let kind = match (&p.signal, &p.value) {
                    (Signal::Constant, Some(Value::Bool(_))) => PointKind::Bool,
                    (Signal::Constant, Some(Value::String(_))) => PointKind::Text,
                    _ => PointKind::Float,
                };
                read_only(&p.name, p.unit.as_ref(), kind)
            })
            .collect()
    }

    fn describe(&self, s: &mut String, plan: &PlanContext<'_>) {
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "  {} (simulated, every {}) status {}/status/{}",
            self.name, self.poll, plan.gateway, self.name
        );
        for p in &self.points {
            let topic = (plan.topic)(&self.name, &p.name);
            let unit = p
                .unit
                .as_deref()
                .map(|u| format!(" [{u}]"))
                .unwrap_or_default();
            let _ = writeln!(s, "    {:<16} {:?}{unit} -> {topic}", p.name, p.signal);
        }
    }
}

struct PointState {
    cfg: SimPoint,
    name: Arc<str>,
    unit: Option<Arc<str>>,
    count: u64,
}

impl PointState {
    fn sample(&mut self, elapsed: f64, rng: &mut impl Rng) -> Value {
        let lo = self.cfg.min.unwrap_or(0.0);
        let hi = self.cfg.max.unwrap_or(100.0);
        let period = self
            .cfg
            .period
            .map(|p| p.get().as_secs_f64())
            .unwrap_or(60.0);
        match self.cfg.signal {
            Signal::Sine => {
                Value::Float(lo + (hi - lo) * (0.5 + 0.5 * (TAU * elapsed / period).sin()))
            }
            Signal::Ramp => Value::Float(lo + (hi - lo) * (elapsed / period).fract()),
            Signal::Random => Value::Float(if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            }),
            Signal::Counter => {
                let start = self.cfg.start.unwrap_or(0.0);
                let step = self.cfg.step.unwrap_or(1.0);
                let n = self.count;
                self.count += 1;
                let v = start + step * n as f64;
                if start.fract() == 0.0 && step.fract() == 0.0 && v.abs() < 9.0e15 {
                    Value::Int(v as i64)
                } else {
                    Value::Float(v)
                }
            }
            Signal::Constant => self.cfg.value.clone().unwrap_or(Value::Int(0)),
        }
    }
}

/// A running simulated device.
pub struct Simulated {
    cfg: SimulatedConfig,
}

impl Simulated {
    pub fn new(cfg: SimulatedConfig) -> Self {
        Simulated { cfg }
    }
}

impl Source for Simulated {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let span = info_span!("device", device = %self.cfg.name);
        Box::pin(self.poll_loop(ctx).instrument(span))
    }
}

impl Simulated {
    async fn poll_loop(self, ctx: SourceContext) {
        let device: Arc<str> = self.cfg.name.as_str().into();
        let mut points: Vec<PointState> = self
            .cfg
            .points
            .iter()
            .map(|p| PointState {
                name: p.name.as_str().into(),
                unit: p.unit.as_deref().map(Arc::from),
                cfg: p.clone(),
                count: 0,
            })
            .collect();
        let started = Instant::now();
        let mut tick = interval(self.cfg.poll.get());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if !ctx.set_status(&device, true, None).await {
            return;
        }
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let ts = now_ms();
            let elapsed = started.elapsed().as_secs_f64();
            let values: Vec<(usize, Value)> = {
                let mut rng = rand::rng();
                points
                    .iter_mut()
                    .enumerate()
                    .map(|(i, p)| (i, p.sample(elapsed, &mut rng)))
                    .collect()
            };
            for (i, value) in values {
                let p = &points[i];
                let reading = Reading::good(&device, &p.name, value, &p.unit, ts);
                if !ctx.send(reading).await {
                    debug!("pipeline closed; stopping");
                    return;
                }
            }
        }
        ctx.set_status(&device, false, Some("gateway stopped"))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(yaml: &str) -> PointState {
        let cfg: SimPoint = serde_yaml_ng::from_str(yaml).unwrap();
        PointState {
            name: "p".into(),
            unit: None,
            cfg,
            count: 0,
        }
    }

    #[test]
    fn counter_counts_in_integers() {
        let mut p = point("{name: c, signal: counter, start: 10, step: 5}");
        let mut rng = rand::rng();
        let got: Vec<Value> = (0..3).map(|_| p.sample(0.0, &mut rng)).collect();
        assert_eq!(got, vec![Value::Int(10), Value::Int(15), Value::Int(20)]);
    }

    #[test]
    fn sine_and_ramp_stay_in_range() {
        let mut rng = rand::rng();
        for sig in ["sine", "ramp", "random"] {
            let mut p = point(&format!("{{name: s, signal: {sig}, min: -5, max: 5}}"));
            for t in 0..200 {
                let Value::Float(v) = p.sample(t as f64 * 0.7, &mut rng) else {
                    panic!("float expected")
                };
                assert!((-5.0..=5.0).contains(&v), "{sig} gave {v}");
            }
        }
        let mut p = point("{name: s, signal: sine, period: 4s, min: 0, max: 10}");
        let Value::Float(quarter) = p.sample(1.0, &mut rng) else {
            panic!()
        };
        assert!((quarter - 10.0).abs() < 1e-9);
    }

    #[test]
    fn constant_keeps_its_type() {
        let mut rng = rand::rng();
        let mut p = point("{name: k, signal: constant, value: on}");
        assert_eq!(p.sample(0.0, &mut rng), Value::String("on".into()));
        let mut p = point("{name: k, signal: constant, value: true}");
        assert_eq!(p.sample(0.0, &mut rng), Value::Bool(true));
    }
}
