//! The embedded MQTT broker (rumqttd): maps `broker:` to rumqttd's settings,
//! starts its router and listeners, and gives the gateway in-process links
//! to publish and subscribe without a TCP loopback client.
//!
//! Owns the rumqttd router, the listener threads ([`listener`]: plain MQTT,
//! run by rumqttd; [`front`]: TLS and websocket, terminated by fieldgate and
//! relayed to the plain listener) and the local links. Must not know about
//! devices or rules: it moves [`crate::reading::Publish`]es ([`publisher`]).
//!
//! rumqttd has no graceful shutdown: its threads end with the process. Its
//! connection tasks can panic on malformed input; tokio catches those per
//! connection, so the release profile must keep `panic = "unwind"`.
//! [`log_panics`] (installed by [`Broker::start`]) logs every panic through
//! tracing; see [`listener`] for the panics that need more than a log line.
//! README.md "Embedded broker: MQTT conformance" lists what rumqttd 0.20
//! gets wrong and what the gateway does about it.

mod config;
pub mod front;
pub mod listener;
mod publisher;
pub mod store;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tracing::info;

pub use config::{BrokerConfig, BrokerTls, BrokerUser};
pub use listener::{LISTENER_RESTARTS, PANICS, log_panics};
pub use publisher::{publisher, valid_publish_topic};

use config::connection_settings;
use listener::ServerFactory;

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
    #[error("broker TLS {path}: {reason}")]
    Tls {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot start broker thread: {0}")]
    Thread(std::io::Error),
}

/// Router slots kept for the gateway's own in-process links (publisher,
/// bridge) on top of `broker.max_connections`.
pub const LOCAL_LINKS: usize = 4;

/// Messages the router hands a connection per wake-up.
const OUTGOING_BATCH: u64 = 1000;

/// Opens an in-process link on the router (it captures rumqttd's router handle).
/// The error is rumqttd's `LinkError`, rendered (it is over 800 bytes).
type LinkFactory = Box<dyn Fn(&str) -> Result<(LinkTx, LinkRx), String> + Send + Sync>;

/// The router (running from [`Broker::new`]) and the listeners to start.
pub struct Broker {
    link: LinkFactory,
    servers: ServerFactory,
    listeners: Vec<(ServerSettings, LinkType)>,
    /// The TLS listener (bound) and its acceptor, and the websocket
    /// listener: fieldgate terminates both ([`front`]).
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    websocket: Option<TcpListener>,
    max_connections: usize,
    listen: SocketAddr,
}

fn server(name: &str, listen: SocketAddr, conn: &ConnectionSettings) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
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
    /// Starts the router. Listeners start with [`Broker::start`].
    pub fn new(cfg: &BrokerConfig) -> Result<Broker, BrokerError> {
        let conn = connection_settings(cfg)?;
        probe_bind(cfg.listen)?;
        let listeners = vec![(server("mqtt", cfg.listen, &conn), LinkType::Remote)];
        let tls = match &cfg.tls {
            Some(tls) => {
                let acceptor = front::acceptor(tls)?;
                let listener =
                    TcpListener::bind(tls.listen).map_err(|source| BrokerError::Listen {
                        addr: tls.listen,
                        source,
                    })?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let websocket = match cfg.websocket {
            Some(addr) => Some(
                TcpListener::bind(addr).map_err(|source| BrokerError::Listen { addr, source })?,
            ),
            None => None,
        };
        // Each subscription filter keeps a log of recent messages of about
        // `buffer_per_filter`; a subscriber that falls further behind skips
        // messages (drop policy, README "Embedded broker"). Batches of 1,000
        // measured best in `cargo bench --bench broker`; 8 MiB per filter
        // lost fewest messages of a QoS 0 burst there, but the default is
        // 4 MiB: memory matters more on a Pi than benchmark bursts.
        let (segment, segments) = cfg.segments();
        let router = RouterConfig {
            // room for the gateway's own in-process links
            max_connections: cfg.max_connections + LOCAL_LINKS,
            max_outgoing_packet_count: OUTGOING_BATCH,
            max_segment_size: segment,
            max_segment_count: segments,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        let router_tx = Router::new(0, router).spawn();
        let for_links = router_tx.clone();
        Ok(Broker {
            link: Box::new(move |name| {
                LinkBuilder::new(name, for_links.clone())
                    .build()
                    .map(|(tx, rx, _ack)| (tx, rx))
                    .map_err(|e| e.to_string())
            }),
            servers: Arc::new(move |settings| Server::new(settings, router_tx.clone(), V4)),
            listeners,
            tls,
            websocket,
            max_connections: cfg.max_connections,
            listen: cfg.listen,
        })
    }

    /// An in-process link; take all links before [`Broker::start`].
    pub fn link(&self, name: &str) -> Result<(LinkTx, LinkRx), BrokerError> {
        (self.link)(name).map_err(|reason| BrokerError::Link {
            name: name.to_string(),
            reason,
        })
    }

    /// Starts the listeners, each on its own supervised thread, and waits
    /// until the plain MQTT listener accepts connections.
    pub fn start(self) -> Result<(), BrokerError> {
        log_panics();
        for (settings, kind) in self.listeners {
            listener::spawn(settings, kind, self.servers.clone())?;
        }
        let target = front::relay_target(self.listen);
        if let Some((socket, acceptor)) = self.tls {
            front::spawn(
                socket,
                front::Front::Tls(acceptor),
                target,
                self.max_connections,
            )?;
        }
        if let Some(socket) = self.websocket {
            front::spawn(
                socket,
                front::Front::Websocket,
                target,
                self.max_connections,
            )?;
        }
        let listen = self.listen;
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
    sockets_on_port(port, "0A") > 0
}

/// Client connections open on the embedded broker's plain listener `port`
/// (TLS and websocket clients are relayed to it, so they count too).
pub fn connections(port: u16) -> usize {
    sockets_on_port(port, "01")
}

/// TCP sockets whose local port is `port` in kernel state `state` (hex, as in
/// /proc/net/tcp: `0A` listen, `01` established).
fn sockets_on_port(port: u16, state: &str) -> usize {
    let needle = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(f).map_or(0, |text| {
                text.lines()
                    .skip(1)
                    .filter(|l| {
                        let mut cols = l.split_whitespace();
                        let local = cols.nth(1).unwrap_or("");
                        let st = cols.nth(1).unwrap_or("");
                        st == state && format!("{local} ").ends_with(&needle)
                    })
                    .count()
            })
        })
        .sum()
}
