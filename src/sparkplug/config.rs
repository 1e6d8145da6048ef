//! `sparkplug:`: the Sparkplug B edge node's section, its defaults and its
//! checks (each problem names its YAML path; the line is found by the
//! config leaf's locator).
//!
//! Owns [`SparkplugConfig`] and [`Target`]. Must not start anything or
//! know how payloads are encoded.

use serde::Deserialize;

use crate::config::{Report, TimeSpan};

/// `sparkplug:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The Sparkplug group (`spBv1.0/{group_id}/...`).
    pub group_id: String,
    /// The edge node id; the gateway id when absent.
    #[serde(default)]
    pub edge_node_id: Option<String>,
    /// With it, births wait for `spBv1.0/STATE/{primary_host_id}` to say
    /// online, and data while the host is offline is kept as history.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    #[serde(default)]
    pub target: Target,
    /// Metrics per second while stored history drains.
    #[serde(default = "default_history_rate")]
    pub history_rate: u32,
    /// Historical metrics per DDATA message while history drains.
    #[serde(default = "default_history_batch")]
    pub history_batch: u32,
    /// DDATA kept while the host is offline at most (`sparkplug.db`);
    /// past it the oldest go.
    #[serde(default = "default_history_max_rows")]
    pub history_max_rows: u64,
    /// Group commit of stored DDATA: how long they gather after the first
    /// before one commit (`0s`: each at once; at most
    /// [`MAX_HISTORY_COMMIT_WINDOW`]).
    #[serde(default = "default_history_commit_window")]
    pub history_commit_window: TimeSpan,
    /// Report by exception: DDATA carries only the metrics that changed.
    #[serde(default = "yes")]
    pub report_by_exception: bool,
    /// A numeric change smaller than this is not reported (`null`: any change).
    #[serde(default)]
    pub deadband: Option<f64>,
}

/// `sparkplug.target`: which broker the node publishes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The embedded broker (local SCADA or a host that connects to the gateway).
    #[default]
    Local,
    /// The upstream broker of `uplink:`.
    Uplink,
}

fn yes() -> bool {
    true
}

fn default_history_rate() -> u32 {
    1000
}

fn default_history_batch() -> u32 {
    100
}

fn default_history_max_rows() -> u64 {
    1_000_000
}

/// The longest `history_commit_window` accepted.
pub const MAX_HISTORY_COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The outbox's default window (`uplink.buffer.commit_window`).
fn default_history_commit_window() -> TimeSpan {
    crate::bridge::config::DEFAULT_COMMIT_WINDOW
}

/// A Sparkplug id element: not empty, none of `/ + #` (topic levels and
/// wildcards, forbidden by the specification).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#']) && !id.contains(char::is_control)
}

impl SparkplugConfig {
    /// The edge node id: `edge_node_id`, else the gateway id.
    pub fn node_id<'a>(&'a self, gateway: &'a str) -> &'a str {
        self.edge_node_id.as_deref().unwrap_or(gateway)
    }

    /// Adds this section's problems to `report`, under `key`.
    /// `uplink_url`: `uplink.url`, when there is an uplink.
    pub(crate) fn validate(&self, key: &str, uplink_url: Option<&str>, report: &mut Report) {
        let ids = [
            ("group_id", Some(&self.group_id)),
            ("edge_node_id", self.edge_node_id.as_ref()),
            ("primary_host_id", self.primary_host_id.as_ref()),
        ];
        for (name, id) in ids {
            if let Some(id) = id
                && !valid_id(id)
            {
                report.add(
                    format!("{key}.{name}"),
                    format!("{id:?} is not a Sparkplug id: it must not be empty nor contain `/`, `+` or `#`"),
                );
            }
        }
        if self.target == Target::Uplink && uplink_url.is_none() {
            report.add(
                format!("{key}.target"),
                "`uplink` needs an `uplink:` section (or use `target: local`)",
            );
        }
        if self.history_rate == 0 {
            report.add(
                format!("{key}.history_rate"),
                "must be at least 1 (metrics per second)",
            );
        }
        if self.history_commit_window.get() > MAX_HISTORY_COMMIT_WINDOW {
            report.add(
                format!("{key}.history_commit_window"),
                "must be at most 10s (DDATA a SIGKILL or power cut may lose)",
            );
        }
        if self.history_max_rows == 0 {
            report.add(
                format!("{key}.history_max_rows"),
                "must be at least 1 (DDATA messages kept)",
            );
        }
        if self.history_batch == 0 {
            report.add(
                format!("{key}.history_batch"),
                "must be at least 1 (metrics per message)",
            );
        }
        if let Some(d) = self.deadband
            && !(d.is_finite() && d >= 0.0)
        {
            report.add(
                format!("{key}.deadband"),
                format!("{d} is not a deadband: give a number >= 0, or null"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_topic_separators_and_wildcards() {
        assert!(valid_id("plant-a"));
        assert!(valid_id("Plant A.1"));
        for bad in ["", "a/b", "a+", "#", "x\n"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_local_with_report_by_exception() {
        let c: SparkplugConfig = serde_yaml_ng::from_str("group_id: g").unwrap();
        assert!(c.enabled && c.report_by_exception);
        assert_eq!(c.target, Target::Local);
        assert_eq!((c.history_rate, c.history_batch), (1000, 100));
        assert_eq!(c.node_id("gw"), "gw");
    }
}
