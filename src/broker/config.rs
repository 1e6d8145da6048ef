//! `broker:` in the YAML file: the embedded broker's listeners, limits and
//! users, authorisation and queue limits (their checks are `validate.rs`).
//! Must not start anything.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ByteSize, LoginUser, TimeSpan};

/// `broker:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub max_connections: usize,
    pub max_payload: ByteSize,
    /// Logins (`config::LoginUser`: a name and where its password comes from).
    pub users: Vec<LoginUser>,
    pub tls: Option<BrokerTls>,
    /// No longer used (rumqttd's per-filter log); accepted so that older
    /// config files still load.
    pub buffer_per_filter: ByteSize,
    /// A mosquitto password file (`mosquitto_passwd` format).
    pub password_file: Option<PathBuf>,
    /// `None`: anonymous clients allowed only when no users and no
    /// password file are configured.
    pub allow_anonymous: Option<bool>,
    /// When present, whatever no rule allows is denied.
    pub acl: Option<Vec<AclRule>>,
    /// `$SYS/broker/...` refresh; zero turns `$SYS` off.
    pub sys_interval: TimeSpan,
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
            sys_interval: TimeSpan(std::time::Duration::from_secs(10)),
            max_queued_messages: 1000,
            max_queued_bytes: ByteSize(1024 * 1024),
            max_spooled_bytes: ByteSize(64 * 1024 * 1024),
            max_inflight: 100,
        }
    }
}

/// `broker.tls`: an MQTT-over-TLS listener beside the plain one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}
