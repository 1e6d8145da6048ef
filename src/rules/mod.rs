//! The rules stage: turns [`Reading`]s into [`Publish`]es, through Rhai
//! scripts (`fn on_reading(r)`, docs/design.md) or, without scripts, the
//! default mapping (this file and `mapping.rs`).
//!
//! Files: `api.rs` (what scripts can call: `emit`, `publish`, helpers),
//! `script_reading.rs` (the reading object scripts get), `state.rs`
//! (helper memory), `engine.rs` (scripts, state, one call per reading),
//! `reload.rs` (SIGHUP), `stage.rs` (the blocking worker), `cli.rs`
//! (`fieldgate rules test`), `grouping.rs` (`payload: per_device`: one
//! message per device per poll).
//!
//! Owns `RulesConfig` and the stage loop. Must not talk to devices or the
//! broker: it reads one channel and writes another.

mod api;
pub mod cli;
mod engine;
#[cfg(test)]
mod examples_tests;
mod grouping;
#[cfg(test)]
mod grouping_tests;
mod mapping;
mod reload;
mod script_reading;
mod stage;
#[cfg(test)]
mod stage_tests;
mod state;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{error, info, info_span};

pub use engine::{ENTRY, Failure, RulesEngine, ScriptCounters};
pub use grouping::Grouping;
pub use mapping::{TopicTemplate, device_template};
pub use reload::Reloaded;
pub use script_reading::ScriptReading;

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
pub async fn run(
    gateway: &str,
    cfg: &RulesConfig,
    config_file: &Path,
    devices: &[DeviceSpec],
    mut readings: ReadingsReceiver,
    out: mpsc::Sender<Publish>,
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
    } else if cfg.groups_by_device() {
        info!(topic = %device_template(&cfg.topic), "rules: default mapping, one message per device per poll");
    } else {
        info!(topic = %cfg.topic, "rules: default mapping");
    }
    let (work_tx, work_rx) = mpsc::channel(WORK_CAPACITY);
    let span = info_span!("rules-worker");
    let worker =
        tokio::task::spawn_blocking(move || span.in_scope(|| stage::worker(engine, work_rx, out)));
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
