//! `broker:` in the YAML file: the embedded broker's listeners, limits and
//! users, their semantic checks, and their mapping to rumqttd's
//! `ConnectionSettings`. Must not start anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use rumqttd::ConnectionSettings;
use serde::Deserialize;

use super::BrokerError;
use crate::config::{ByteSize, Duration, Report, SecretSource};

/// `broker:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub max_connections: usize,
    pub max_payload: ByteSize,
    pub users: Vec<BrokerUser>,
    pub tls: Option<BrokerTls>,
    /// Recent messages kept per subscription filter: a subscriber that falls
    /// further behind skips messages; the broker's memory grows to about
    /// this much per filter in use.
    pub buffer_per_filter: ByteSize,
    /// A mosquitto password file (`mosquitto_passwd` format).
    pub password_file: Option<PathBuf>,
    /// `None`: anonymous clients allowed only when no users and no
    /// password file are configured.
    pub allow_anonymous: Option<bool>,
    /// When present, whatever no rule allows is denied.
    pub acl: Option<Vec<AclRule>>,
    /// `$SYS/broker/...` refresh; zero turns `$SYS` off.
    pub sys_interval: Duration,
    /// Per session, in memory.
    pub max_queued_messages: usize,
    pub max_queued_bytes: ByteSize,
    /// Per persistent session, on disk.
    pub max_spooled_bytes: ByteSize,
    /// QoS 1/2 messages sent to one client and not yet acknowledged.
    pub max_inflight: u16,
}

/// One entry of `broker.acl`: topic filters a user (or `*`, any client) may
/// read, write, both, or never touch. `%u` is the user name, `%c` the
/// client id. Deny rules win over allow rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub user: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub readwrite: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: None,
            max_connections: 256,
            max_payload: ByteSize(256 * 1024),
            users: Vec::new(),
            tls: None,
            buffer_per_filter: ByteSize(4 * 1024 * 1024),
            password_file: None,
            allow_anonymous: None,
            acl: None,
            sys_interval: Duration(std::time::Duration::from_secs(10)),
            max_queued_messages: 1000,
            max_queued_bytes: ByteSize(1024 * 1024),
            max_spooled_bytes: ByteSize(64 * 1024 * 1024),
            max_inflight: 100,
        }
    }
}

/// One entry of `broker.users`. The password comes from `password_env` or
/// `password_file`, never from the YAML file itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    pub username: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `broker.tls`: an MQTT-over-TLS listener beside the plain one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl BrokerConfig {
    /// rumqttd's segment size and count for `buffer_per_filter`: segments of
    /// at least one `max_payload` (and 64KiB, at most 1MiB where the buffer
    /// allows), at least two of them.
    pub(crate) fn segments(&self) -> (usize, usize) {
        let buffer = self.buffer_per_filter.as_usize();
        let size = (buffer / 4)
            .clamp(64 * 1024, 1024 * 1024)
            .max(self.max_payload.as_usize());
        (size, (buffer / size).max(2))
    }
}

impl BrokerUser {
    fn source(&self) -> Result<SecretSource, String> {
        SecretSource::pick(
            self.password_env.as_ref(),
            self.password_file.as_ref(),
            "password",
        )?
        .ok_or_else(|| "a user needs password_env or password_file".to_string())
    }
}

impl BrokerConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        if self.max_connections == 0 {
            report.add(format!("{path}.max_connections"), "must be at least 1");
        }
        if self.buffer_per_filter.bytes() < 2 * self.max_payload.bytes().max(64 * 1024) {
            report.add(
                format!("{path}.buffer_per_filter"),
                "must hold at least two max_payload messages (and at least 128KiB)",
            );
        }
        if self.max_payload.bytes() < 128 || self.max_payload.bytes() > 256 * 1024 * 1024 {
            report.add(
                format!("{path}.max_payload"),
                "must be between 128B and 256MiB",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let up = format!("{path}.users[{i}]");
            if u.username.is_empty() {
                report.add(format!("{up}.username"), "must not be empty");
            }
            if !seen.insert(u.username.as_str()) {
                report.add(
                    format!("{up}.username"),
                    format!("duplicate user {:?}", u.username),
                );
            }
            match u.source().and_then(|s| s.resolve()) {
                Ok(_) => {}
                Err(e) => report.add(up, e),
            }
        }
        if let Some(tls) = &self.tls {
            let mut missing = false;
            for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if !file.is_file() {
                    missing = true;
                    report.add(
                        format!("{path}.tls.{key}"),
                        format!("no such file: {}", file.display()),
                    );
                }
            }
            // the files exist: they must hold a usable certificate and key
            if !missing && let Err(e) = super::front::acceptor(tls) {
                report.add(format!("{path}.tls"), e.to_string());
            }
        }
        super::auth::validate(self, path, report);
    }
}

/// rumqttd's per-connection settings for `cfg` (passwords resolved here).
pub(crate) fn connection_settings(cfg: &BrokerConfig) -> Result<ConnectionSettings, BrokerError> {
    let auth = if cfg.users.is_empty() {
        None
    } else {
        let mut m = HashMap::new();
        for u in &cfg.users {
            let secret =
                u.source()
                    .and_then(|s| s.resolve())
                    .map_err(|reason| BrokerError::User {
                        username: u.username.clone(),
                        reason,
                    })?;
            m.insert(u.username.clone(), secret.expose().to_string());
        }
        Some(m)
    };
    Ok(ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: cfg.max_payload.as_usize(),
        max_inflight_count: 100,
        auth,
        external_auth: None,
        dynamic_filters: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_buffer_per_filter() {
        let mut c = BrokerConfig::default();
        assert_eq!(
            c.segments(),
            (1024 * 1024, 4),
            "default 4MiB: four 1MiB segments"
        );
        c.buffer_per_filter = ByteSize(512 * 1024);
        assert_eq!(c.segments(), (256 * 1024, 2));
        c.max_payload = ByteSize(2 * 1024 * 1024);
        c.buffer_per_filter = ByteSize(4 * 1024 * 1024);
        assert_eq!(
            c.segments(),
            (2 * 1024 * 1024, 2),
            "a segment holds max_payload"
        );
    }
}
