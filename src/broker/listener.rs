//! The listeners: plain MQTT, MQTT over TLS (`broker.tls`), MQTT over
//! websocket (`broker.websocket`) and over websocket over TLS
//! (`broker.tls.websocket`). Each accepted socket gets TCP_NODELAY,
//! its own task and a place among the connections that have not sent
//! CONNECT yet ([`Pending`], `broker.max_pending_connections`: a new
//! socket past it closes the one that has waited longest, if that one has
//! waited more than [`GRACE`], so silent sockets cannot lock real clients
//! out and a burst of real clients, whose CONNECTs are on their way, is
//! not cut off). The TLS or websocket handshake
//! and the CONNECT must be done within `broker.connect_timeout` of the
//! accept. A connection slot (`max_connections`) is taken only once the
//! CONNECT is read (see `connection`). The websocket listener reads
//! messages no larger than a packet may be and checks `Origin` against
//! `broker.websocket_origins` (empty: the request's own host). A panic in
//! a connection task closes that connection only and is counted.
//!
//! Owns the listening sockets and the connection tasks. Must not touch
//! the router except through [`Ctx`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::connection::{Ctx, serve};
use super::limits::Limit;
use super::stats::add;

/// What a listener speaks.
#[derive(Clone)]
pub enum Kind {
    Plain,
    Tls(TlsAcceptor),
    Websocket,
    SecureWebsocket(TlsAcceptor),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Plain => "mqtt",
            Kind::Tls(_) => "tls",
            Kind::Websocket => "websocket",
            Kind::SecureWebsocket(_) => "wss",
        }
    }
}

/// How long a socket may wait for its CONNECT before a newer one can take
/// its place among the pending ones (a real client sends CONNECT at once).
pub const GRACE: Duration = Duration::from_secs(1);

/// Sockets accepted that have not sent CONNECT yet, oldest first.
pub struct Pending {
    max: usize,
    next: AtomicU64,
    waiting: Mutex<VecDeque<(u64, Instant, CancellationToken)>>,
}

/// A socket's place in [`Pending`]; given back when dropped. `evicted`
/// fires when a newer socket took the place.
pub struct PendingSlot {
    pending: Arc<Pending>,
    id: u64,
    pub evicted: CancellationToken,
}

impl Pending {
    pub fn new(max: usize) -> Arc<Pending> {
        Arc::new(Pending {
            max: max.max(1),
            next: AtomicU64::new(0),
            waiting: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Instant, CancellationToken)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new socket; at the cap, the longest waiting one is
    /// told to close if it has waited longer than [`GRACE`] (`true` in the
    /// result).
    pub fn admit(self: &Arc<Self>) -> (PendingSlot, bool) {
        let id = self.next.fetch_add(1, Relaxed);
        let evicted = CancellationToken::new();
        let now = Instant::now();
        let mut w = self.lock();
        let mut evicted_one = false;
        if w.len() >= self.max
            && w.front()
                .is_some_and(|(_, since, _)| now.duration_since(*since) > GRACE)
            && let Some((_, _, oldest)) = w.pop_front()
        {
            oldest.cancel();
            evicted_one = true;
        }
        w.push_back((id, now, evicted.clone()));
        drop(w);
        let slot = PendingSlot {
            pending: self.clone(),
            id,
            evicted,
        };
        (slot, evicted_one)
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut w = self.pending.lock();
        if let Some(i) = w.iter().position(|(id, _, _)| *id == self.id) {
            w.remove(i);
        }
    }
}

/// Answers the websocket upgrade with the `mqtt` subprotocol, after the
/// `Origin` check.
struct Upgrade {
    origins: Arc<[String]>,
}

impl Upgrade {
    /// A request without `Origin` (not a browser) passes; with it, the
    /// origin must be listed, or (empty list) name the request's host.
    fn origin_allowed(&self, req: &Request) -> bool {
        let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) else {
            return true;
        };
        if !self.origins.is_empty() {
            return self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        }
        let host = req.headers().get("host").and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
    }
}

impl Callback for Upgrade {
    fn on_request(self, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        if !self.origin_allowed(req) {
            let mut refused = ErrorResponse::new(Some("origin not allowed".into()));
            *refused.status_mut() = StatusCode::FORBIDDEN;
            return Err(refused);
        }
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(resp)
    }
}

/// Websocket limits: a message or frame no larger than the largest packet
/// the broker reads, small write buffers.
fn websocket_config(max_packet: usize) -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(max_packet + 16),
        max_frame_size: Some(max_packet + 16),
        write_buffer_size: 16 * 1024,
        ..WebSocketConfig::default()
    }
}

/// Accepts until `cancel`; connection tasks join `tracker`.
pub async fn run(
    listener: TcpListener,
    kind: Kind,
    ctx: Arc<Ctx>,
    pending: Arc<Pending>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(listener = kind.name(), listen = %addr, "broker listener ready");
    }
    let mut accept_failures = crate::log_throttle::LogThrottle::new(Duration::from_secs(10));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    if let Some(suppressed) = accept_failures.ready() {
                        warn!(listener = kind.name(), error = %e, suppressed, "listener cannot accept");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let deadline = Instant::now() + ctx.limits.connect_timeout;
        let (slot, evicted) = pending.admit();
        if evicted {
            ctx.router
                .stats
                .limits
                .hit(Limit::PendingConnections, &peer);
        }
        let _ = tcp.set_nodelay(true);
        // one task type per kind, so a plain connection's task is not
        // sized for a TLS or websocket handshake
        let (c, kind) = (ctx.clone(), kind.clone());
        // no second task per connection to watch for panics: each is caught
        // where it happens
        let guard = ctx.clone();
        match kind {
            Kind::Plain => tracker.spawn(contained(serve(tcp, peer, c, slot, deadline), guard)),
            Kind::Tls(a) => {
                tracker.spawn(contained(serve_tls(tcp, peer, c, slot, deadline, a), guard))
            }
            Kind::Websocket => tracker.spawn(contained(
                serve_websocket(tcp, peer, c, slot, deadline),
                guard,
            )),
            Kind::SecureWebsocket(a) => {
                tracker.spawn(contained(serve_wss(tcp, peer, c, slot, deadline, a), guard))
            }
        };
    }
}

/// The TLS handshake of a socket, within `deadline` and its pending place.
async fn tls_accept(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: &PendingSlot,
    deadline: Instant,
    acceptor: TlsAcceptor,
    kind: &str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let r = handshake(deadline, &slot.evicted, acceptor.accept(tcp)).await;
    handshaken(kind, peer, r)
}

async fn serve_tls(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    slot: PendingSlot,
    deadline: Instant,
    acceptor: TlsAcceptor,
) {
    if let Some(s) = tls_accept(tcp, peer, &slot, deadline, acceptor, "tls").await {
        serve(s, peer, ctx, slot, deadline).await;
    }
}

async fn serve_websocket(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    slot: PendingSlot,
    deadline: Instant,
) {
    let evict = slot.evicted.clone();
    if let Some(ws) = upgrade(tcp, peer, &ctx, deadline, &evict).await {
        serve(ws, peer, ctx, slot, deadline).await;
    }
}

async fn serve_wss(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    slot: PendingSlot,
    deadline: Instant,
    acceptor: TlsAcceptor,
) {
    let evict = slot.evicted.clone();
    if let Some(tls) = tls_accept(tcp, peer, &slot, deadline, acceptor, "wss").await
        && let Some(ws) = upgrade(tls, peer, &ctx, deadline, &evict).await
    {
        serve(ws, peer, ctx, slot, deadline).await;
    }
}

/// The websocket upgrade (Origin checked, frames bounded) on `stream`.
async fn upgrade<S>(
    stream: S,
    peer: SocketAddr,
    ctx: &Ctx,
    deadline: Instant,
    evict: &CancellationToken,
) -> Option<ws_stream_tungstenite::WsStream<async_tungstenite::tokio::TokioAdapter<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static,
{
    let upgrade = Upgrade {
        origins: ctx.websocket_origins.clone(),
    };
    let config = websocket_config(ctx.max_packet());
    let accept =
        async_tungstenite::tokio::accept_hdr_async_with_config(stream, upgrade, Some(config));
    let r = handshake(deadline, evict, accept).await;
    handshaken("websocket", peer, r).map(ws_stream_tungstenite::WsStream::new)
}

/// Why a handshake did not finish.
enum Unfinished<E> {
    Failed(E),
    TimedOut,
    Evicted,
}

/// Runs a handshake until `deadline` or until a newer socket takes its place.
async fn handshake<S, E>(
    deadline: Instant,
    evict: &CancellationToken,
    f: impl std::future::Future<Output = Result<S, E>>,
) -> Result<S, Unfinished<E>> {
    tokio::select! {
        _ = evict.cancelled() => Err(Unfinished::Evicted),
        r = tokio::time::timeout_at(deadline, f) => match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Unfinished::Failed(e)),
            Err(_) => Err(Unfinished::TimedOut),
        },
    }
}

/// The handshaken stream, or `None` (logged) on failure or timeout.
fn handshaken<S, E: std::fmt::Display>(
    kind: &str,
    peer: SocketAddr,
    r: Result<S, Unfinished<E>>,
) -> Option<S> {
    match r {
        Ok(s) => Some(s),
        Err(Unfinished::Failed(e)) => {
            debug!(listener = kind, %peer, error = %e, "handshake failed");
            None
        }
        Err(Unfinished::TimedOut) => {
            debug!(listener = kind, %peer, "handshake not done within connect_timeout");
            None
        }
        Err(Unfinished::Evicted) => {
            debug!(listener = kind, %peer, "closed before its handshake: max_pending_connections");
            None
        }
    }
}

/// Runs a connection task, containing a panic to it: counted, logged,
/// that connection closed (tokio closes its socket as the future drops).
async fn contained(task: impl std::future::Future<Output = ()>, ctx: Arc<Ctx>) {
    if std::panic::AssertUnwindSafe(task)
        .catch_unwind()
        .await
        .is_err()
    {
        add(&ctx.router.stats.panics, 1);
        warn!("a broker connection task panicked; that connection was closed");
    }
}
