//! The listeners: plain MQTT, MQTT over TLS (`broker.tls`) and MQTT over
//! websocket (`broker.websocket`). Each accepted socket gets TCP_NODELAY
//! and its own task; a TLS or websocket handshake runs inside that task
//! with a deadline ([`HANDSHAKE_TIMEOUT`]), so a silent client blocks
//! nobody. Past `max_connections` a client still gets its CONNECT
//! answered (CONNACK 3) by a small reserve of slots; past that reserve
//! the socket is closed at once. A panic in a connection task closes that
//! connection only and is counted.
//!
//! Owns the listening sockets and the connection tasks. Must not touch
//! the router except through [`Ctx`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::connection::{Ctx, serve};
use super::stats::add;

/// How long a client gets to complete the TLS or websocket handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over `max_connections` that are answered with CONNACK 3.
const REFUSE_RESERVE: usize = 64;

/// What a listener speaks.
#[derive(Clone)]
pub enum Kind {
    Plain,
    Tls(TlsAcceptor),
    Websocket,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Plain => "mqtt",
            Kind::Tls(_) => "tls",
            Kind::Websocket => "websocket",
        }
    }
}

/// Answers the websocket upgrade with the `mqtt` subprotocol.
struct MqttSubprotocol;

impl Callback for MqttSubprotocol {
    fn on_request(self, _req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    }
}

/// Connection slots shared by all listeners.
pub struct Slots {
    pub clients: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            clients: Arc::new(Semaphore::new(max_connections)),
            reserve: Arc::new(Semaphore::new(REFUSE_RESERVE)),
        })
    }
}

/// Accepts until `cancel`; connection tasks join `tracker`.
pub async fn run(
    listener: TcpListener,
    kind: Kind,
    ctx: Arc<Ctx>,
    slots: Arc<Slots>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(listener = kind.name(), listen = %addr, "broker listener ready");
    }
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    warn!(listener = kind.name(), error = %e, "listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (permit, full) = match slots.clients.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match slots.reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    warn!(listener = kind.name(), %peer, "connection closed at once: max_connections and the refusal reserve are in use");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (kind, for_task) = (kind.clone(), ctx.clone());
        let task = tracker.spawn(async move {
            let ctx = for_task;
            match kind {
                Kind::Plain => serve(tcp, peer, ctx, full, permit).await,
                Kind::Tls(acceptor) => {
                    let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    if let Some(s) = handshaken("tls", peer, r) {
                        serve(s, peer, ctx, full, permit).await;
                    }
                }
                Kind::Websocket => {
                    let r = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        async_tungstenite::tokio::accept_hdr_async(tcp, MqttSubprotocol),
                    )
                    .await;
                    if let Some(s) = handshaken("websocket", peer, r) {
                        let ws = ws_stream_tungstenite::WsStream::new(s);
                        serve(ws, peer, ctx, full, permit).await;
                    }
                }
            }
        });
        watch_panics(task, ctx.clone());
    }
}

/// The handshaken stream, or `None` (logged) on failure or timeout.
fn handshaken<S, E: std::fmt::Display>(
    kind: &str,
    peer: SocketAddr,
    r: Result<Result<S, E>, tokio::time::error::Elapsed>,
) -> Option<S> {
    match r {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(listener = kind, %peer, error = %e, "handshake failed");
            None
        }
        Err(_) => {
            debug!(listener = kind, %peer, timeout = ?HANDSHAKE_TIMEOUT, "handshake timed out");
            None
        }
    }
}

/// Counts a connection task's panic (tokio already closed its socket).
pub fn watch_panics(task: tokio::task::JoinHandle<()>, ctx: Arc<Ctx>) {
    tokio::spawn(async move {
        if let Err(e) = task.await
            && e.is_panic()
        {
            add(&ctx.router.stats.panics, 1);
            warn!("a broker connection task panicked; that connection was closed");
        }
    });
}
