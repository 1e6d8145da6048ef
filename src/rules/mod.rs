//! The rules stage: turns [`Reading`]s into [`Publish`]es, through the
//! default mapping (this file and `mapping.rs`) or Rhai scripts (issue 4).
//!
//! Owns `RulesConfig` and the stage loop. Must not talk to devices or the
//! broker: it reads one channel and writes another.

mod mapping;

use std::path::PathBuf;

use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::debug;

pub use mapping::TopicTemplate;

use crate::config::{Config, Report};
use crate::reading::{Publish, Qos, Reading};

/// `rules:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rhai scripts, relative to the config file's folder.
    pub scripts: Vec<PathBuf>,
    /// Topic template with `{gateway}`, `{device}`, `{point}`.
    pub topic: String,
    pub qos: Qos,
    pub retain: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            scripts: Vec::new(),
            topic: "{gateway}/{device}/{point}".to_string(),
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }
}

impl RulesConfig {
    pub(crate) fn validate(&self, _config: &Config, path: &str, report: &mut Report) {
        if !self.scripts.is_empty() {
            report.add(
                format!("{path}.scripts"),
                "rule scripts are not available in this build yet",
            );
        }
    }
}

/// The default mapping of design §4: topic from the template, JSON payload,
/// the configured QoS and retain flag.
pub struct DefaultMapping {
    gateway: String,
    topic: TopicTemplate,
    qos: Qos,
    retain: bool,
}

impl DefaultMapping {
    pub fn new(gateway: &str, cfg: &RulesConfig) -> Self {
        DefaultMapping {
            gateway: gateway.to_string(),
            topic: TopicTemplate::parse(&cfg.topic),
            qos: cfg.qos,
            retain: cfg.retain,
        }
    }

    /// The default topic of a device's point.
    pub fn topic(&self, device: &str, point: &str) -> String {
        self.topic.render(&self.gateway, device, point)
    }

    pub fn map(&self, r: &Reading) -> Publish {
        Publish {
            topic: self.topic(&r.device, &r.point),
            payload: r.to_payload(),
            qos: self.qos,
            retain: self.retain,
        }
    }
}

/// Runs the stage until `readings` closes (all sources stopped), then
/// returns; dropping `out` lets the next stage finish in turn.
pub async fn run(
    config: &Config,
    mut readings: mpsc::Receiver<Reading>,
    out: mpsc::Sender<Publish>,
) {
    let mapping = DefaultMapping::new(&config.gateway.id, &config.rules);
    while let Some(r) = readings.recv().await {
        if out.send(mapping.map(&r)).await.is_err() {
            debug!("publish channel closed; rules stage stops");
            break;
        }
    }
}
