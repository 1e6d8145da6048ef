//! `broker:` in the YAML file: the embedded broker's listeners, limits and
//! users, authorisation and queue limits (their checks are `validate.rs`).
//! Must not start anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ByteSize, LoginUser, TimeSpan};

/// `broker:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// The plain MQTT listener; `null` turns it off (TLS or websocket only).
    pub listen: Option<SocketAddr>,
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
    /// Levels of a topic or filter; deeper ones close the connection.
    /// Default 201: mosquitto's limit of 200 `/` separators.
    pub max_topic_levels: usize,
    /// Retained messages kept, by count and by bytes (topic + payload);
    /// past either a retained publish is delivered but not retained.
    pub max_retained_messages: usize,
    pub max_retained_bytes: ByteSize,
    /// Subscriptions one session may hold; also the most filters of one
    /// SUBSCRIBE that are looked at (the rest are refused).
    pub max_subscriptions_per_client: usize,
    /// Persistent sessions kept; past it a new one gets CONNACK 3.
    pub max_sessions: usize,
    /// An offline persistent session is removed after this long.
    pub persistent_session_expiry: TimeSpan,
    /// A connection with no complete CONNECT by then is closed (the TLS
    /// and websocket handshakes count).
    pub connect_timeout: TimeSpan,
    /// Sockets accepted that have not sent CONNECT yet; a new one past it
    /// closes the one that has waited longest.
    pub max_pending_connections: usize,
    /// What one connection may owe its client unsent (control packets
    /// and messages taken for writing); past it the client is disconnected.
    pub max_client_buffer: ByteSize,
    /// `broker.db` in all (the sessions' stored messages and the retained
    /// messages); past it new stored messages are dropped and counted.
    pub max_store_bytes: ByteSize,
    /// Allowed `Origin` headers on the websocket listener; empty: the
    /// request's own host only. A request without `Origin` (not a browser)
    /// is allowed.
    pub websocket_origins: Vec<String>,
    /// Failed logins per client address before it is refused for the rest
    /// of the period (MQTT and the status page).
    pub login_failures: LoginFailures,
    /// MQTT 5: the longest Session Expiry Interval a client gets.
    pub max_session_expiry: TimeSpan,
    /// MQTT 5: the Topic Alias Maximum announced in CONNACK.
    pub max_topic_alias: u16,
    /// MQTT 5: when set, a client asking for a longer keep-alive (or none)
    /// is told this one (Server Keep Alive; mosquitto's `max_keepalive`).
    pub max_keepalive: Option<u16>,
    /// MQTT 5: a payload whose Payload Format Indicator says UTF-8 is
    /// checked (0x99 when it is not).
    pub validate_utf8_payloads: bool,
}

/// `broker.login_failures`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFailures {
    pub max: u32,
    pub per: TimeSpan,
}

impl Default for LoginFailures {
    fn default() -> Self {
        LoginFailures {
            max: 5,
            per: TimeSpan(Duration::from_secs(60)),
        }
    }
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
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
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
            max_topic_levels: 201,
            max_retained_messages: 10_000,
            max_retained_bytes: ByteSize(16 * 1024 * 1024),
            max_subscriptions_per_client: 1000,
            max_sessions: 10_000,
            persistent_session_expiry: TimeSpan(Duration::from_secs(2 * 24 * 3600)),
            connect_timeout: TimeSpan(Duration::from_secs(10)),
            max_pending_connections: 64,
            max_client_buffer: ByteSize(1024 * 1024),
            max_store_bytes: ByteSize(512 * 1024 * 1024),
            websocket_origins: Vec::new(),
            login_failures: LoginFailures::default(),
            max_session_expiry: TimeSpan(Duration::from_secs(2 * 24 * 3600)),
            max_topic_alias: 10,
            max_keepalive: None,
            validate_utf8_payloads: false,
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
    /// MQTT over websocket over TLS (`wss://`) with the same certificate.
    #[serde(default)]
    pub websocket: Option<SocketAddr>,
    /// Clients must present a certificate signed by `cafile`.
    #[serde(default)]
    pub require_certificate: bool,
    pub cafile: Option<PathBuf>,
}
