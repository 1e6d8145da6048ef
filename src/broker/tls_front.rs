//! The TLS listener (`broker.tls`): fieldgate terminates TLS itself and
//! relays each connection, decrypted, to the broker's plain listener on the
//! same host.
//!
//! Why not rumqttd's TLS listener: rumqttd 0.20 runs the TLS handshake
//! inside its accept loop, so one client that opens TCP and sends nothing
//! blocks every later TLS client. Here each handshake runs in its own task
//! with a deadline ([`HANDSHAKE_TIMEOUT`]).
//!
//! Owns the TLS listening socket and its relay tasks (they end with the
//! process, like rumqttd's listeners). Must not touch the router.

use std::io::BufReader;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, error, info, warn};

use super::{BrokerError, BrokerTls};

/// How long a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections closed at once because `max_connections` relays were busy.
pub static TLS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// TLS handshakes that failed or timed out.
pub static TLS_HANDSHAKE_FAILED: AtomicU64 = AtomicU64::new(0);

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

/// Runs the TLS listener on its own thread and runtime.
pub fn spawn(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    target: SocketAddr,
    max_connections: usize,
) -> Result<(), BrokerError> {
    listener
        .set_nonblocking(true)
        .map_err(BrokerError::Thread)?;
    std::thread::Builder::new()
        .name("broker-tls-front".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot build the TLS listener runtime; TLS listener stopped");
                    return;
                }
            };
            runtime.block_on(serve(listener, acceptor, target, max_connections));
        })
        .map(drop)
        .map_err(BrokerError::Thread)
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    target: SocketAddr,
    max_connections: usize,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "TLS listener unusable; TLS listener stopped");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, relay = %target, "TLS listener ready");
    }
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning
                warn!(error = %e, "TLS listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            TLS_REFUSED.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, max_connections, "TLS connection refused: max_connections reached");
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            relay(tcp, peer, acceptor, target).await;
        });
    }
}

async fn relay(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, target: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            TLS_HANDSHAKE_FAILED.fetch_add(1, Ordering::Relaxed);
            info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            TLS_HANDSHAKE_FAILED.fetch_add(1, Ordering::Relaxed);
            info!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            return;
        }
    };
    let mut plain = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            error!(%peer, relay = %target, error = %e, "cannot reach the broker's plain listener");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut tls, &mut plain).await {
        Ok((up, down)) => debug!(%peer, up, down, "TLS connection closed"),
        Err(e) => debug!(%peer, error = %e, "TLS connection ended"),
    }
}
