//! The YAML configuration: schema of the top-level sections, loading, and
//! error reporting with YAML path, line and column.
//!
//! Owns `Config`, [`load`] and [`ConfigError`]. Section structs that belong to
//! one stage live beside that stage (`broker::BrokerConfig`,
//! `rules::RulesConfig`, one struct per device kind in `southbound/`); this
//! module only assembles and validates them. It must not start anything.

mod devices;
mod locate;
pub mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use devices::{DEVICE_KINDS, DeviceConfig};
pub use locate::{Location, Locations};
pub use types::{ByteSize, Duration, ReconnectConfig, Secret, SecretSource};
pub(crate) use validate::check_point_names;

use crate::broker::BrokerConfig;
use crate::ops::homeassistant::HomeAssistantConfig;
use crate::ops::http::MetricsConfig;
use crate::rules::RulesConfig;

/// Default config file path.
pub const DEFAULT_PATH: &str = "/etc/fieldgate/fieldgate.yaml";

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the config was read from (scripts are resolved relative to it).
    pub source: PathBuf,
    pub gateway: GatewayConfig,
    pub broker: BrokerConfig,
    pub devices: Vec<DeviceConfig>,
    pub rules: RulesConfig,
    /// The metrics and health endpoint; off when absent.
    pub metrics: Option<MetricsConfig>,
    /// `uplink:`: the store-and-forward bridge; `None` for a local gateway.
    pub uplink: Option<crate::bridge::UplinkConfig>,
    /// `homeassistant:`: MQTT discovery; off when absent.
    pub homeassistant: Option<HomeAssistantConfig>,
}

/// `gateway:`: identity and where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Used in topics and client ids; `[A-Za-z0-9_-]+`.
    pub id: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
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
    uplink: Option<crate::bridge::UplinkConfig>,
    #[serde(default)]
    metrics: Option<MetricsConfig>,
    /// `http:` is the same section as `metrics:` under its newer name.
    #[serde(default)]
    http: Option<MetricsConfig>,
    #[serde(default)]
    homeassistant: Option<HomeAssistantConfig>,
}

/// One thing wrong with the config, at a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `devices[1].points[0].signal`; empty for the document itself.
    pub path: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        match self.location {
            Some(l) => write!(
                f,
                "{path} (line {}, column {}): {}",
                l.line, l.col, self.message
            ),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Why a config could not be loaded. Every variant is a user error: exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {}", problems_text(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn problems_text(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} problems:", many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

impl ConfigError {
    /// The problems found, empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Collects problems with their locations while a config is checked.
pub(crate) struct Report<'a> {
    locations: &'a Locations,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(locations: &'a Locations) -> Self {
        Report {
            locations,
            problems: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let location = self.locations.find(&path);
        self.problems.push(Problem {
            path,
            location,
            message: message.into(),
        });
    }

    /// Records a serde error at `prefix` + the path serde_path_to_error found.
    pub(crate) fn add_serde(
        &mut self,
        prefix: &str,
        err: serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) {
        let mut path = prefix.to_string();
        for seg in err.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                Segment::Map { key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Segment::Enum { .. } | Segment::Unknown => {}
            }
        }
        let inner = err.into_inner();
        let mut message = inner.to_string();
        // An unknown key is reported at its parent: point at the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some(key) = rest.split('`').next()
        {
            let child = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
            if self.locations.find(&child) != self.locations.find(&path) {
                path = child;
            }
        }
        let mut location = self.locations.find(&path);
        if let Some(l) = inner.location() {
            location = Some(Location {
                line: l.line(),
                col: l.column(),
            });
            // the text deserializer appends its own position: keep ours only
            if let Some(cut) = message.find(" at line ") {
                message.truncate(cut);
            }
        }
        self.problems.push(Problem {
            path,
            location,
            message,
        });
    }

    pub(crate) fn finish(self, file: &Path) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.into_error(file))
        }
    }

    fn into_error(self, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: file.to_path_buf(),
            problems: self.problems,
        }
    }
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
    let raw: RawConfig = match serde_path_to_error::deserialize(de) {
        Ok(raw) => raw,
        Err(e) => {
            report.add_serde("", e);
            return Err(report.into_error(path));
        }
    };
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
        metrics: raw.http.or(raw.metrics),
        uplink: raw.uplink,
        homeassistant: raw.homeassistant,
    };
    validate::check(&config, &positions, &mut report);
    report.finish(path)?;
    Ok(config)
}

impl Config {
    /// Resolves a path written in the config relative to the config file's folder.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}
