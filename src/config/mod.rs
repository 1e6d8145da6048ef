//! The config leaf: the value types every section uses (durations, byte
//! sizes, names, secrets), problem reporting with YAML path, line and
//! column ([`Report`], [`Problem`], [`ConfigError`]), the line locator, the
//! checks several sections share (point names, topic templates), and the
//! secret-file rules (`secrets`: `${NAME}` in their paths, their mode).
//!
//! Owns these shared pieces only. Each stage owns its section struct beside
//! its code (`broker::BrokerConfig`, `rules::RulesConfig`, one struct per
//! device kind in `southbound/`); `crate::settings`, above the stages,
//! assembles them into the whole `Config`. This module must import no stage
//! and start nothing (see the module graph check, `tests/it/arch.rs`).

mod locate;
pub mod secrets;
pub mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::{Location, Locations};
pub use types::{
    ByteSize, LoginUser, ReconnectConfig, Secret, SecretSource, TimeSpan, is_valid_name,
};
pub(crate) use validate::{check_point_names, check_topic_template};

/// Default config file path.
pub const DEFAULT_PATH: &str = "/etc/fieldgate/fieldgate.yaml";

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

    pub(crate) fn into_error(self, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: file.to_path_buf(),
            problems: self.problems,
        }
    }
}

/// Resolves a path written in the config file at `config_file` relative to
/// that file's folder.
pub fn resolve_path(config_file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
