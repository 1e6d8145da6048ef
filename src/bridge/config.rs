//! `uplink:`: the typed section of the store-and-forward bridge and its
//! semantic checks (reported with YAML paths through [`Report`]).
//!
//! Owns the config structs and defaults. Must not open files other than
//! to check that they exist, nor connect anywhere.

use std::path::PathBuf;

use serde::Deserialize;

use super::filters::{filter_problem, matches};
use crate::config::{ByteSize, Report, SecretSource, TimeSpan};
use crate::reading::Qos;

/// `uplink:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Fixed MQTT client id; defaults to the gateway id.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) to verify the broker; the system roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), both or neither.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: TimeSpan,
    /// Messages sent upstream and still in the outbox (not yet acknowledged,
    /// or acknowledged and not yet deleted), at most: the in-flight window,
    /// and the bound on messages sent again after a crash.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Messages per second sent from the outbox while a backlog drains
    /// (`forward/pace.rs`); `None`: as fast as the window allows.
    #[serde(default)]
    pub drain_rate: Option<u32>,
    /// Reconnect backoff (`upstream/backoff.rs`).
    #[serde(default)]
    pub reconnect: ReconnectPolicy,
    #[serde(default)]
    pub forward: Vec<ForwardRule>,
    #[serde(default)]
    pub commands: Vec<CommandRule>,
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Tries of one message upstream before it moves to the dead-letter
    /// table: a connection that drops while the message is the oldest one
    /// unacknowledged counts as a failed try.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Largest MQTT packet sent or received upstream.
    /// A message that cannot fit goes to the dead-letter table unsent.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: ByteSize,
    /// Deadline of a connect (TCP, TLS, CONNACK) and of each write upstream
    /// that makes no progress.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: TimeSpan,
    /// The MQTT version spoken upstream: `3.1.1` (the default) or `5`.
    #[serde(default)]
    pub protocol: Protocol,
    /// MQTT 5: how long the upstream broker keeps the session after a
    /// drop (CONNECT's Session Expiry Interval); ignored at 3.1.1, whose
    /// sessions last until the broker's own limit.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: TimeSpan,
    /// MQTT 5: messages sent from the outbox after they waited for the
    /// uplink carry the user properties `fieldgate-replay: 1` and
    /// `fieldgate-ts: <ms when committed>`.
    #[serde(default = "default_true")]
    pub backfill_properties: bool,
}

/// `uplink.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "ProtocolName")]
pub enum Protocol {
    /// MQTT 3.1.1 (level 4).
    #[default]
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

/// What YAML may write for a protocol: `3.1.1`, `"5"` or `5`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProtocolName {
    Text(String),
    Number(f64),
}

impl TryFrom<ProtocolName> for Protocol {
    type Error = String;
    fn try_from(n: ProtocolName) -> Result<Protocol, String> {
        let text = match n {
            ProtocolName::Text(t) => t,
            ProtocolName::Number(f) => f.to_string(),
        };
        match text.trim() {
            "3.1.1" | "4" => Ok(Protocol::V311),
            "5" | "5.0" => Ok(Protocol::V5),
            other => Err(format!("{other:?} is not a protocol: use 3.1.1 or 5")),
        }
    }
}

/// The longest `session_expiry` MQTT 5 can say (0xFFFFFFFE s; 0xFFFFFFFF
/// means never).
const MAX_SESSION_EXPIRY: u64 = 0xFFFF_FFFE;

fn default_session_expiry() -> TimeSpan {
    TimeSpan::from_secs(7 * 86_400)
}

fn default_true() -> bool {
    true
}

fn default_max_attempts() -> u32 {
    5
}

fn default_max_packet_size() -> ByteSize {
    ByteSize(1024 * 1024)
}

fn default_io_timeout() -> TimeSpan {
    TimeSpan::from_secs(10)
}

/// Room `fieldgate check` keeps beside `broker.max_payload` for the topic
/// (prefix excluded) and the MQTT header, when it checks that the uplink
/// can carry the largest local message.
pub const TOPIC_ROOM: u64 = 1024;

fn default_keep_alive() -> TimeSpan {
    TimeSpan::from_secs(30)
}

fn default_inflight() -> u16 {
    1000
}

/// `uplink.reconnect`: full jitter under a cap that doubles from `min` to
/// `max`, reset after a connection stayed up for `stable`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectPolicy {
    pub min: TimeSpan,
    pub max: TimeSpan,
    pub stable: TimeSpan,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            min: TimeSpan::from_secs(1),
            max: TimeSpan::from_secs(120),
            stable: TimeSpan::from_secs(30),
        }
    }
}

/// One `uplink.forward` entry: local topics matching `filter` go upstream
/// as `prefix + topic` at `qos` (0: live only, never buffered).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub filter: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub qos: Qos,
    /// MQTT 5: the Message Expiry Interval of these messages; a message
    /// sent after an outage carries what is left of it, one past it is
    /// dropped unsent (counted as expired).
    #[serde(default)]
    pub message_expiry: Option<TimeSpan>,
}

impl ForwardRule {
    /// `message_expiry` in whole seconds (0: none).
    pub fn expiry_secs(&self) -> u32 {
        self.message_expiry
            .map_or(0, |e| e.get().as_secs().clamp(1, u32::MAX.into()) as u32)
    }
}

/// One `uplink.commands` entry: upstream topics matching `filter` are
/// published locally with `strip_prefix` removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRule {
    pub filter: String,
    #[serde(default)]
    pub strip_prefix: String,
    #[serde(default)]
    pub qos: Qos,
}

/// `uplink.buffer`: the outbox limits and drain order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub max_messages: u64,
    pub max_bytes: ByteSize,
    pub max_age: TimeSpan,
    pub when_full: WhenFull,
    pub drain: Drain,
    /// SQLite `synchronous`: `full` (default: an fsync per commit batch,
    /// nothing committed is lost on power loss) or `normal` (WAL synced at
    /// checkpoints only: power loss can lose the batches since the last one).
    pub synchronous: Synchronous,
    /// Group commit of the gateway's own messages and of the deletes: how
    /// long writes gather after the first one before one commit (local
    /// clients' messages are committed at once: their PUBACK waits). `0s`:
    /// every batch at once, as before this key.
    pub commit_window: TimeSpan,
    /// Write-behind (`behind.rs`): the gateway's own messages stay in
    /// memory and reach the outbox only if not acknowledged upstream
    /// within this time. `None` (the default): committed first.
    pub write_behind: Option<TimeSpan>,
}

/// The longest `commit_window` accepted.
const MAX_COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// The default `commit_window` (docs/design.md, "Where the bytes go").
pub const DEFAULT_COMMIT_WINDOW: TimeSpan = TimeSpan::from_millis(500);

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_messages: 1_000_000,
            max_bytes: ByteSize(256 * 1024 * 1024),
            max_age: TimeSpan::from_secs(7 * 86_400),
            when_full: WhenFull::DropOldest,
            drain: Drain::Fifo,
            synchronous: Synchronous::Full,
            commit_window: DEFAULT_COMMIT_WINDOW,
            write_behind: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    DropOldest,
    DropNewest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drain {
    Fifo,
    LiveFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
}

/// The parsed `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?}: the url must start with mqtt:// or mqtts://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: {p:?} is not a port number"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: no host name"));
        }
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl UplinkConfig {
    pub fn password_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::pick(
            self.password_env.as_ref(),
            self.password_file.as_ref(),
            "password",
        )
    }

    pub fn client_id<'a>(&'a self, gateway: &'a str) -> &'a str {
        self.client_id.as_deref().unwrap_or(gateway)
    }

    /// The first forward rule matching a local `topic`.
    pub fn forward_rule(&self, topic: &str) -> Option<&ForwardRule> {
        self.forward.iter().find(|r| matches(&r.filter, topic))
    }

    /// The upstream topic of the gateway status (`{gateway}/status` with the
    /// prefix of the first forward rule that matches it, else of the first rule).
    pub fn status_topic(&self, gateway: &str) -> String {
        let topic = crate::reading::status::gateway_topic(gateway);
        let prefix = self
            .forward_rule(&topic)
            .or(self.forward.first())
            .map(|r| r.prefix.as_str())
            .unwrap_or("");
        format!("{prefix}{topic}")
    }

    /// Checks that the largest message the local broker accepts
    /// (`broker.max_payload`, with a topic of up to [`TOPIC_ROOM`] bytes
    /// and the longest forward prefix) fits in `max_packet_size`.
    pub(crate) fn validate_carries(&self, path: &str, max_payload: u64, report: &mut Report) {
        let prefix = self.forward.iter().map(|r| r.prefix.len() as u64).max();
        let need = max_payload + prefix.unwrap_or(0) + TOPIC_ROOM;
        if self.forward.iter().any(|r| r.qos.as_u8() > 0) && need > self.max_packet_size.bytes() {
            report.add(
                format!("{path}.max_packet_size"),
                format!(
                    "broker.max_payload ({}) plus topic room needs {}, more than the uplink \
                     carries ({}): lower broker.max_payload or raise uplink.max_packet_size",
                    ByteSize(max_payload),
                    ByteSize(need),
                    self.max_packet_size
                ),
            );
        }
    }

    /// Every check of `uplink:` (at `path`), each problem into `report`.
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        self.validate_login(path, report);
        self.validate_link(path, report);
        self.validate_routes(path, report);
        self.buffer.validate(&format!("{path}.buffer"), report);
    }

    /// The broker's address, the client id, the credentials and the files.
    fn validate_login(&self, path: &str, report: &mut Report) {
        if let Err(e) = Endpoint::parse(&self.url) {
            report.add(format!("{path}.url"), e);
        }
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            report.add(format!("{path}.client_id"), "must not be empty");
        }
        match self.password_source() {
            Err(e) => report.add(path, e),
            Ok(Some(s)) => {
                if self.username.is_none() {
                    report.add(path, "a password needs a username");
                }
                if let Err(e) = s.resolve() {
                    report.add(path, e);
                }
            }
            Ok(None) => {}
        }
        for (key, file) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(f) = file
                && !f.is_file()
            {
                report.add(
                    format!("{path}.{key}"),
                    format!("no such file: {}", f.display()),
                );
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            report.add(path, "give both cert_file and key_file, or neither");
        }
    }

    /// The link's timings, window and packet limits.
    fn validate_link(&self, path: &str, report: &mut Report) {
        if self.keep_alive.get() < std::time::Duration::from_secs(1) {
            report.add(format!("{path}.keep_alive"), "must be at least 1s");
        }
        if self.inflight == 0 || self.inflight > 10_000 {
            report.add(format!("{path}.inflight"), "must be between 1 and 10000");
        }
        if self.reconnect.min.get().is_zero() || self.reconnect.min > self.reconnect.max {
            report.add(
                format!("{path}.reconnect"),
                "min must be above zero and not above max",
            );
        }
        if self.drain_rate == Some(0) {
            report.add(
                format!("{path}.drain_rate"),
                "must be at least 1 (messages per second), or null for no limit",
            );
        }
        if self.max_attempts == 0 {
            report.add(format!("{path}.max_attempts"), "must be at least 1");
        }
        let packet = self.max_packet_size.bytes();
        if !(1024..=256 * 1024 * 1024).contains(&packet) {
            report.add(
                format!("{path}.max_packet_size"),
                "must be between 1KiB and 256MiB",
            );
        }
        if self.session_expiry.get().as_secs() > MAX_SESSION_EXPIRY {
            report.add(
                format!("{path}.session_expiry"),
                "must be at most 136y (MQTT's 32-bit seconds)",
            );
        }
        if self.io_timeout.get() < std::time::Duration::from_secs(1) {
            report.add(format!("{path}.io_timeout"), "must be at least 1s");
        }
    }

    /// The `forward` and `commands` entries.
    fn validate_routes(&self, path: &str, report: &mut Report) {
        if self.forward.is_empty() && self.commands.is_empty() {
            report.add(path, "give at least one forward or commands entry");
        }
        for (i, r) in self.forward.iter().enumerate() {
            if let Some(p) = filter_problem(&r.filter) {
                report.add(format!("{path}.forward[{i}].filter"), p);
            }
            if let Some(e) = r.message_expiry
                && !(1..=u64::from(u32::MAX)).contains(&e.get().as_secs())
            {
                report.add(
                    format!("{path}.forward[{i}].message_expiry"),
                    "must be between 1s and 136y (MQTT's 32-bit seconds), or left out",
                );
            }
            if r.prefix.contains(['+', '#']) {
                report.add(
                    format!("{path}.forward[{i}].prefix"),
                    "a prefix cannot contain wildcards",
                );
            }
        }
        for (i, r) in self.commands.iter().enumerate() {
            if let Some(p) = filter_problem(&r.filter) {
                report.add(format!("{path}.commands[{i}].filter"), p);
            }
        }
    }
}

impl BufferConfig {
    /// The outbox's limits and commit settings (at `path`: `uplink.buffer`).
    fn validate(&self, path: &str, report: &mut Report) {
        let b = self;
        if b.max_messages == 0 {
            report.add(format!("{path}.max_messages"), "must be at least 1");
        }
        if b.max_bytes.bytes() < 1024 {
            report.add(format!("{path}.max_bytes"), "must be at least 1KiB");
        }
        if b.max_age.get() < std::time::Duration::from_secs(1) {
            report.add(format!("{path}.max_age"), "must be at least 1s");
        }
        if let Some(w) = b.write_behind
            && !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600))
                .contains(&w.get())
        {
            report.add(
                format!("{path}.write_behind"),
                "must be between 100ms and 1h, or null (off)",
            );
        }
        if b.commit_window.get() > MAX_COMMIT_WINDOW {
            report.add(
                format!("{path}.commit_window"),
                "must be at most 10s (the own readings wait that long before the local broker sees them)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("mqtts://broker.example.com:8883").unwrap(),
            Endpoint {
                tls: true,
                host: "broker.example.com".into(),
                port: 8883
            }
        );
        assert_eq!(Endpoint::parse("mqtt://h").unwrap().port, 1883);
        assert_eq!(Endpoint::parse("mqtts://h").unwrap().port, 8883);
        assert!(Endpoint::parse("http://h").is_err());
        assert!(Endpoint::parse("mqtt://h:x").is_err());
        assert!(Endpoint::parse("mqtt://").is_err());
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    #[test]
    fn uplink_problems_name_their_yaml_path() {
        let yaml = "gateway: { id: gw }\nuplink:\n  url: http://x\n  forward:\n    - { filter: \"a/#/b\" }\n  buffer: { max_messages: 0 }\n";
        let err = crate::settings::parse(yaml, Path::new("t.yaml")).expect_err("invalid");
        let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"uplink.url"), "{paths:?}");
        assert!(paths.contains(&"uplink.forward[0].filter"), "{paths:?}");
        assert!(paths.contains(&"uplink.buffer.max_messages"), "{paths:?}");
    }

    #[test]
    fn uplink_parses_with_defaults() {
        let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  forward: [{ filter: \"gw/#\", prefix: \"s/\" }]\n";
        let cfg = crate::settings::parse(yaml, Path::new("t.yaml")).expect("valid");
        let up = cfg.uplink.expect("uplink");
        assert_eq!(up.client_id("gw"), "gw");
        assert_eq!(up.status_topic("gw"), "s/gw/status");
        assert_eq!(up.buffer.max_messages, 1_000_000);
        assert_eq!(up.protocol, super::Protocol::V311);
        assert_eq!(up.session_expiry.get().as_secs(), 7 * 86_400);
        assert!(up.backfill_properties);
    }

    #[test]
    fn protocol_and_expiry_keys() {
        let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  protocol: 5\n  session_expiry: 1h\n  forward: [{ filter: \"gw/#\", qos: 1, message_expiry: 3h }]\n";
        let cfg = crate::settings::parse(yaml, Path::new("t.yaml")).expect("valid");
        let up = cfg.uplink.expect("uplink");
        assert_eq!(up.protocol, super::Protocol::V5);
        assert_eq!(up.forward[0].expiry_secs(), 3 * 3600);
        let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  protocol: 3.1.1\n  forward: [{ filter: \"gw/#\" }]\n";
        let cfg = crate::settings::parse(yaml, Path::new("t.yaml")).expect("valid");
        assert_eq!(cfg.uplink.expect("uplink").protocol, super::Protocol::V311);
        let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  protocol: 4.2\n  forward: [{ filter: \"gw/#\", message_expiry: 0s }]\n";
        let err = crate::settings::parse(yaml, Path::new("t.yaml")).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("protocol") || text.contains("3.1.1 or 5"),
            "{text}"
        );
    }
}
