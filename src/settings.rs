//! The whole configuration: assembles the sections every stage owns
//! (`gateway:`, `broker:`, `devices:`, `rules:`, `http:`, `uplink:`,
//! `homeassistant:`, `sparkplug:`)
//! into [`Config`], loads the file and runs the checks across sections
//! (the secret files of every section: `settings/secrets.rs`).
//!
//! Sits at the wiring level, above the stages, because it names each
//! stage's section; the value types and problem reporting it uses are the
//! `crate::config` leaf. A new device kind does not touch this file (see
//! `southbound/devices.rs`). Must not start anything.

mod secrets;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bridge::UplinkConfig;
use crate::broker::BrokerConfig;
use crate::config::{ConfigError, Locations, Report, check_topic_template, is_valid_name};
use crate::ops::homeassistant::HomeAssistantConfig;
use crate::ops::http::HttpConfig;
use crate::rules::RulesConfig;
use crate::southbound::devices::{self, DeviceConfig};
use crate::sparkplug::SparkplugConfig;

pub use crate::config::DEFAULT_PATH;

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the config was read from (scripts are resolved relative to it).
    pub source: PathBuf,
    pub gateway: GatewayConfig,
    pub broker: BrokerConfig,
    pub devices: Vec<DeviceConfig>,
    pub rules: RulesConfig,
    /// `http:` (or `metrics:`): the metrics, health and status page
    /// endpoint; off when absent.
    pub http: Option<HttpConfig>,
    /// `uplink:`: the store-and-forward bridge; `None` for a local gateway.
    pub uplink: Option<UplinkConfig>,
    /// `homeassistant:`: MQTT discovery; off when absent.
    pub homeassistant: Option<HomeAssistantConfig>,
    /// `sparkplug:`: the Sparkplug B edge node; off when absent.
    pub sparkplug: Option<SparkplugConfig>,
}

/// `gateway:`: identity and where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Used in topics and client ids; `[A-Za-z0-9_-]+`.
    pub id: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `kernel` (default): readings' payload says `"clock": "unsynced"`
    /// while the kernel says NTP has not set the clock; `off`: never.
    #[serde(default)]
    pub clock_check: ClockCheck,
    /// Threads of the async runtime that runs every task (polling, rules,
    /// broker, bridge, status page); 1 to [`MAX_WORKERS`]. One (the
    /// default) spends the least CPU per reading: no task is woken on
    /// another thread (docs/benchmarks.md, issue 27).
    #[serde(default = "default_workers")]
    pub workers: usize,
}

/// `gateway.workers` at most.
pub const MAX_WORKERS: usize = 64;

fn default_workers() -> usize {
    1
}

/// `gateway.clock_check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockCheck {
    #[default]
    Kernel,
    Off,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/fieldgate")
}

/// The file as written, before device kinds are told apart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: GatewayConfig,
    #[serde(default)]
    broker: BrokerConfig,
    #[serde(default)]
    devices: Vec<serde_yaml_ng::Value>,
    #[serde(default)]
    rules: RulesConfig,
    #[serde(default)]
    uplink: Option<UplinkConfig>,
    #[serde(default)]
    metrics: Option<HttpConfig>,
    /// `http:` is the same section as `metrics:` under its newer name.
    #[serde(default)]
    http: Option<HttpConfig>,
    #[serde(default)]
    homeassistant: Option<HomeAssistantConfig>,
    #[serde(default)]
    sparkplug: Option<SparkplugConfig>,
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names the file in messages and
/// anchors relative script paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let locations = Locations::index(text);
    let mut report = Report::new(&locations);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut raw: RawConfig = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            report.add_serde("", e);
            return Err(report.into_error(path));
        }
    };
    // before any section reads a secret file
    secrets::prepare(&mut raw, &mut report);
    let (positions, mut devices): (Vec<usize>, Vec<DeviceConfig>) =
        devices::parse_all(raw.devices, &mut report)
            .into_iter()
            .unzip();
    devices::resolve_paths(&mut devices, path.parent().unwrap_or(Path::new(".")));
    if raw.http.is_some() && raw.metrics.is_some() {
        report.add(
            "http",
            "`http:` and `metrics:` are the same section: give only one",
        );
    }
    let (http_key, http) = match (&raw.http, &raw.metrics) {
        (Some(h), _) => ("http", Some(h)),
        (None, m) => ("metrics", m.as_ref()),
    };
    if let Some(h) = http {
        h.validate(http_key, &mut report);
    }
    for (i, u) in http.map_or(&[][..], |h| &h.users).iter().enumerate() {
        if let Err(e) = u.source().and_then(|s| s.resolve()) {
            report.add(format!("{http_key}.users[{i}]"), e);
        }
    }
    if let Some(ha) = &raw.homeassistant
        && (ha.prefix.is_empty()
            || !crate::broker::valid_publish_topic(&format!("{}/status", ha.prefix)))
    {
        report.add(
            "homeassistant.prefix",
            format!("{:?} is not a valid topic prefix", ha.prefix),
        );
    }
    let config = Config {
        source: path.to_path_buf(),
        gateway: raw.gateway,
        broker: raw.broker,
        devices,
        rules: raw.rules,
        http: raw.http.or(raw.metrics),
        uplink: raw.uplink,
        homeassistant: raw.homeassistant,
        sparkplug: raw.sparkplug,
    };
    check(&config, &positions, &mut report);
    report.finish(path)?;
    Ok(config)
}

/// The checks across sections; `positions[i]` is the index in the YAML
/// list of `config.devices[i]`.
fn check(config: &Config, positions: &[usize], report: &mut Report) {
    if !is_valid_name(&config.gateway.id) {
        report.add(
            "gateway.id",
            format!(
                "{:?} is not a valid id: use letters, digits, `_` and `-` only",
                config.gateway.id
            ),
        );
    }
    if !(1..=MAX_WORKERS).contains(&config.gateway.workers) {
        report.add(
            "gateway.workers",
            format!(
                "{} is out of range: 1 to {MAX_WORKERS} threads",
                config.gateway.workers
            ),
        );
    }
    devices::validate_all(&config.devices, positions, &config.source, report);
    check_topic_template(&config.rules.topic, "rules.topic", report);
    config.broker.validate("broker", report);
    config.rules.validate(&config.source, "rules", report);
    if let Some(uplink) = &config.uplink {
        uplink.validate("uplink", report);
        uplink.validate_carries("uplink", config.broker.max_payload.bytes(), report);
    }
    if config.rules.publishes_no_readings()
        && config.homeassistant.as_ref().is_some_and(|ha| ha.enabled)
    {
        report.add(
            "homeassistant.enabled",
            "discovery announces the reading topics, and rules.payload: none publishes none: set per_point or per_device, or turn discovery off",
        );
    }
    if let Some(sp) = &config.sparkplug {
        sp.validate(
            "sparkplug",
            config.uplink.as_ref().map(|u| u.url.as_str()),
            report,
        );
    }
}

impl Config {
    /// Resolves a path written in the config relative to the config file's folder.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        crate::config::resolve_path(&self.source, p)
    }
}
