//! The embedded MQTT broker (rumqttd): maps `broker:` to rumqttd's settings,
//! starts its listeners, and gives the gateway in-process links to publish
//! and subscribe without a TCP loopback client.
//!
//! Owns `BrokerConfig`, the rumqttd threads and the local links. Must not
//! know about devices or rules: it moves [`Publish`]es.
//!
//! rumqttd has no graceful shutdown: its threads end with the process. Its
//! connection tasks can panic on malformed packets; tokio catches those per
//! connection, so the release profile must keep `panic = "unwind"`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{ByteSize, Report, SecretSource};
use crate::reading::Publish;

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
            for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if !file.is_file() {
                    report.add(
                        format!("{path}.tls.{key}"),
                        format!("no such file: {}", file.display()),
                    );
                }
            }
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker listener {addr} did not come up within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("broker user {username}: {reason}")]
    User { username: String, reason: String },
    #[error("cannot open in-process link {name}: {reason}")]
    Link { name: String, reason: String },
    #[error("cannot start broker thread: {0}")]
    Thread(std::io::Error),
}

/// A started broker: the router and listener threads run until the process ends.
pub struct Broker {
    router: rumqttd::Broker,
    listen: SocketAddr,
}

fn connection_settings(cfg: &BrokerConfig) -> Result<ConnectionSettings, BrokerError> {
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

fn server(
    name: &str,
    listen: SocketAddr,
    tls: Option<TlsConfig>,
    conn: &ConnectionSettings,
) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls,
        next_connection_delay_ms: 0,
        connections: conn.clone(),
    }
}

/// Fails early, with the address in the message, when a port is taken.
fn probe_bind(addr: SocketAddr) -> Result<(), BrokerError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| BrokerError::Listen { addr, source })
}

impl Broker {
    /// Builds the router (it starts at once). Listeners start with [`Broker::start`].
    pub fn new(cfg: &BrokerConfig) -> Result<Broker, BrokerError> {
        let conn = connection_settings(cfg)?;
        let mut v4 = HashMap::new();
        probe_bind(cfg.listen)?;
        v4.insert("mqtt".to_string(), server("mqtt", cfg.listen, None, &conn));
        if let Some(tls) = &cfg.tls {
            probe_bind(tls.listen)?;
            let t = TlsConfig::Rustls {
                capath: None,
                certpath: tls.cert_file.display().to_string(),
                keypath: tls.key_file.display().to_string(),
            };
            v4.insert(
                "mqtts".to_string(),
                server("mqtts", tls.listen, Some(t), &conn),
            );
        }
        let ws = match cfg.websocket {
            Some(addr) => {
                probe_bind(addr)?;
                let mut m = HashMap::new();
                m.insert("ws".to_string(), server("ws", addr, None, &conn));
                Some(m)
            }
            None => None,
        };
        let segment = (cfg.max_payload.as_usize() * 4).max(1024 * 1024);
        let config = rumqttd::Config {
            id: 0,
            router: RouterConfig {
                // room for the gateway's own in-process links
                max_connections: cfg.max_connections + 16,
                max_outgoing_packet_count: 200,
                max_segment_size: segment,
                max_segment_count: 4,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(v4),
            v5: None,
            ws,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            metrics: None,
        };
        Ok(Broker {
            router: rumqttd::Broker::new(config),
            listen: cfg.listen,
        })
    }

    /// An in-process link; take all links before [`Broker::start`].
    pub fn link(&self, name: &str) -> Result<(LinkTx, LinkRx), BrokerError> {
        self.router.link(name).map_err(|e| BrokerError::Link {
            name: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// Starts the listeners on their own thread and waits until the plain
    /// MQTT listener accepts connections.
    pub fn start(mut self) -> Result<(), BrokerError> {
        let listen = self.listen;
        std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || {
                if let Err(e) = self.router.start() {
                    error!(error = %e, "embedded broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;
        let waited = Duration::from_secs(10);
        let deadline = Instant::now() + waited;
        while Instant::now() < deadline {
            if is_listening(listen.port()) {
                info!(%listen, "embedded broker listening");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(BrokerError::NotListening {
            addr: listen,
            waited,
        })
    }
}

/// `true` when some socket listens on TCP `port` (read from /proc/net, so
/// the check makes no connection the broker would log). The port was free a
/// moment before the broker bound it, so the listener is the broker's.
fn is_listening(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().skip(1).any(|l| {
                let mut cols = l.split_whitespace();
                let local = cols.nth(1).unwrap_or("");
                let state = cols.nth(1).unwrap_or("");
                state == "0A" && format!("{local} ").ends_with(&needle)
            })
        })
    })
}

/// `true` when rumqttd accepts `topic` for publishing (a bad topic would
/// make the router drop the whole in-process link).
pub fn valid_publish_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

/// How long [`publisher`] waits, after its last publish, for the broker to
/// route it and for listener threads to write it to subscribers' sockets.
const FLUSH_WAIT: Duration = Duration::from_secs(1);
const FLUSH_GRACE: Duration = Duration::from_millis(100);

/// Publishes everything from `rx` into the broker through an in-process link,
/// until `rx` closes (all senders dropped), and keeps the link's notification
/// queue drained.
///
/// `echo_topic` (the gateway status topic) is subscribed on the same link:
/// after the last publish, the publisher waits until the broker routed the
/// last message on it back (at most [`FLUSH_WAIT`]), plus [`FLUSH_GRACE`] for
/// the listener threads, so the final `offline` reaches local subscribers
/// before the process exits (rumqttd has no graceful shutdown).
///
/// rumqttd's local links publish at QoS 0 only; the router then delivers at
/// each subscription's QoS. The QoS of a [`Publish`] matters for the bridge,
/// not here.
///
/// Drop policy: a publish whose topic the broker would refuse is logged and
/// dropped (it never reaches subscribers or the bridge).
pub async fn publisher(
    link: (LinkTx, LinkRx),
    mut rx: mpsc::Receiver<Publish>,
    echo_topic: String,
) {
    let (mut tx, mut lrx) = link;
    if let Err(e) = tx.subscribe(echo_topic.clone()) {
        warn!(error = %e, "cannot subscribe the publisher link to its own status topic");
    }
    let mut last_echo: Option<Bytes> = None;
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { break };
                if !valid_publish_topic(&p.topic) {
                    warn!(topic = %p.topic, "dropping publish with an invalid topic");
                    crate::ops::metrics::get()
                        .publish_dropped
                        .get_or_create(&crate::ops::metrics::labels("reason", "invalid_topic"))
                        .inc();
                    continue;
                }
                crate::ops::metrics::get().published.inc();
                if p.topic == echo_topic {
                    last_echo = Some(p.payload.clone());
                }
                let publish = rumqttd::protocol::Publish::new(Bytes::from(p.topic), p.payload, p.retain);
                if let Err(e) = tx.send(Packet::Publish(publish, None)).await {
                    error!(error = %e, "local broker link closed; publishes stop");
                    return;
                }
            }
            n = lrx.next() => if !drain_notification(&mut lrx, n).await {
                return;
            },
        }
    }
    let Some(want) = last_echo else { return };
    let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
    while let Ok(n) = tokio::time::timeout_at(deadline, lrx.next()).await {
        if let Ok(Some(rumqttd::Notification::Forward(f))) = &n
            && f.publish.payload == want
        {
            tokio::time::sleep(FLUSH_GRACE).await;
            return;
        }
        if !drain_notification(&mut lrx, n).await {
            return;
        }
    }
}

/// Handles one notification of an in-process link; `false` when the link is gone.
async fn drain_notification(
    lrx: &mut LinkRx,
    n: Result<Option<rumqttd::Notification>, rumqttd::local::LinkError>,
) -> bool {
    match n {
        Ok(Some(n)) => {
            // `None` means the router paused this link: say we are ready again.
            if Option::<Packet>::from(n).is_none() && lrx.wake().await.is_err() {
                return false;
            }
            true
        }
        Ok(None) => true,
        Err(e) => {
            error!(error = %e, "local broker link closed; publishes stop");
            false
        }
    }
}
