//! The TLS (`broker.tls`) and websocket (`broker.websocket`) listeners:
//! fieldgate terminates TLS or the websocket itself and relays each
//! connection's MQTT bytes to the broker's plain listener on the same host.
//!
//! Why not rumqttd's TLS and websocket listeners: rumqttd 0.20 runs the TLS
//! and websocket handshakes inside its accept loop, so one client that
//! opens TCP and sends nothing blocks every later client of that listener.
//! Here each handshake runs in its own task with a deadline
//! ([`HANDSHAKE_TIMEOUT`]).
//!
//! Owns the listening sockets and their relay tasks (they end with the
//! process, like rumqttd's listeners). Must not touch the router.

use std::io::BufReader;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, error, info, warn};

use super::{BrokerError, BrokerTls};

/// How long a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections closed at once because `max_connections` relays were busy.
pub static FRONT_REFUSED: AtomicU64 = AtomicU64::new(0);
/// TLS or websocket handshakes that failed or timed out.
pub static HANDSHAKE_FAILED: AtomicU64 = AtomicU64::new(0);

/// What a front listener terminates.
#[derive(Clone)]
pub enum Front {
    Tls(TlsAcceptor),
    Websocket,
}

impl Front {
    fn name(&self) -> &'static str {
        match self {
            Front::Tls(_) => "tls",
            Front::Websocket => "websocket",
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

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads the certificate chain and key (PEM) into an acceptor.
pub fn acceptor(tls: &BrokerTls) -> Result<TlsAcceptor, BrokerError> {
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| tls_error(p, e))
    };
    let certs = rustls_pemfile::certs(&mut open(&tls.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    if certs.is_empty() {
        return Err(tls_error(&tls.cert_file, "no certificate in the file"));
    }
    let key = rustls_pemfile::private_key(&mut open(&tls.key_file)?)
        .map_err(|e| tls_error(&tls.key_file, e))?
        .ok_or_else(|| tls_error(&tls.key_file, "no private key in the file"))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Where relayed connections go: the plain listener, reached on loopback
/// when it listens on all addresses.
pub fn relay_target(plain: SocketAddr) -> SocketAddr {
    let ip = match plain.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, plain.port())
}

/// Runs a front listener on its own thread and runtime.
pub fn spawn(
    listener: std::net::TcpListener,
    front: Front,
    target: SocketAddr,
    max_connections: usize,
) -> Result<(), BrokerError> {
    listener
        .set_nonblocking(true)
        .map_err(BrokerError::Thread)?;
    std::thread::Builder::new()
        .name(format!("front-{}", front.name()))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(front = front.name(), error = %e, "cannot build the listener runtime; listener stopped");
                    return;
                }
            };
            runtime.block_on(serve(listener, front, target, max_connections));
        })
        .map(drop)
        .map_err(BrokerError::Thread)
}

async fn serve(
    listener: std::net::TcpListener,
    front: Front,
    target: SocketAddr,
    max_connections: usize,
) {
    let kind = front.name();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(front = kind, error = %e, "listener unusable; listener stopped");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!(front = kind, listen = %addr, relay = %target, "broker listener ready");
    }
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning
                warn!(front = kind, error = %e, "listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            FRONT_REFUSED.fetch_add(1, Ordering::Relaxed);
            warn!(front = kind, %peer, max_connections, "connection refused: max_connections reached");
            continue;
        };
        let front = front.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match front {
                Front::Tls(acceptor) => {
                    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    if let Some(s) = handshaken(kind, peer, tls) {
                        relay(s, peer, target).await;
                    }
                }
                Front::Websocket => {
                    let ws = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        async_tungstenite::tokio::accept_hdr_async(tcp, MqttSubprotocol),
                    )
                    .await;
                    if let Some(s) = handshaken(kind, peer, ws) {
                        relay(ws_stream_tungstenite::WsStream::new(s), peer, target).await;
                    }
                }
            }
        });
    }
}

/// The handshaken stream, or `None` (logged and counted) on failure or timeout.
fn handshaken<S, E: std::fmt::Display>(
    kind: &str,
    peer: SocketAddr,
    r: Result<Result<S, E>, tokio::time::error::Elapsed>,
) -> Option<S> {
    match r {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            HANDSHAKE_FAILED.fetch_add(1, Ordering::Relaxed);
            info!(front = kind, %peer, error = %e, "handshake failed");
            None
        }
        Err(_) => {
            HANDSHAKE_FAILED.fetch_add(1, Ordering::Relaxed);
            info!(front = kind, %peer, timeout = ?HANDSHAKE_TIMEOUT, "handshake timed out");
            None
        }
    }
}

/// Copies bytes both ways between a client and the plain listener until either side closes.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    peer: SocketAddr,
    target: SocketAddr,
) {
    let mut plain = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            error!(%peer, relay = %target, error = %e, "cannot reach the broker's plain listener");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut plain).await {
        Ok((up, down)) => debug!(%peer, up, down, "relayed connection closed"),
        Err(e) => debug!(%peer, error = %e, "relayed connection ended"),
    }
}
