//! The HTTP listener's accept loop: hyper's HTTP/1 server with a timer, so
//! a request head must arrive within `http.header_timeout` (and an idle
//! keep-alive connection is closed after the same time: hyper's header
//! timer runs from the end of the previous response), and a cap of
//! `http.max_connections` connections.
//!
//! Owns the connection table and its policy: past the cap, the oldest
//! connection that has not yet sent a whole request head is closed to make
//! room (a client that sends its request at once is served even while
//! half-sent requests fill the table); when every connection is busy with
//! a request (or an event stream), the new one gets `503` and is closed.
//! Each close is counted in `fieldgate_http_closed_total{reason}` and logged
//! (throttled); an idle keep-alive connection closed after a request is
//! not (browsers keep them open). Must not know the routes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::log_throttle::LogThrottle;
use crate::metrics::{self, CounterFamily};

/// The largest request head read (hyper's minimum buffer).
const MAX_HEAD: usize = 8192;
/// How long a new connection waits for the slot of one it closed.
const EVICT_WAIT: Duration = Duration::from_millis(500);
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 29\r\n\r\ntoo many connections to HTTP\n";

/// `http.max_connections` and `http.header_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// `fieldgate_http_closed_total{reason}`: `header_timeout`, `evicted`,
/// `refused`.
fn closed() -> &'static CounterFamily {
    static CLOSED: LazyLock<CounterFamily> = LazyLock::new(|| {
        metrics::get().register(
            "http_closed",
            "HTTP connections closed by a limit (header_timeout, evicted, refused)",
            CounterFamily::default(),
        )
    });
    &CLOSED
}

fn count(reason: &str) {
    closed()
        .get_or_create(&metrics::labels("reason", reason))
        .inc();
    static LOG: LazyLock<Mutex<LogThrottle>> =
        LazyLock::new(|| Mutex::new(LogThrottle::new(Duration::from_secs(10))));
    let ready = LOG.lock().map(|mut t| t.ready()).ok().flatten();
    if let Some(suppressed) = ready {
        warn!(reason, suppressed, "HTTP connection closed by a limit");
    }
}

/// One open connection.
struct Conn {
    /// A whole request head arrived.
    proven: AtomicBool,
    close: CancellationToken,
}

type Table = Mutex<VecDeque<Arc<Conn>>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, VecDeque<Arc<Conn>>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the oldest connection without a whole request head; `false`
/// when there is none.
fn evict_oldest(table: &Table) -> bool {
    let t = lock(table);
    let open = |c: &&Arc<Conn>| !c.proven.load(Ordering::Relaxed) && !c.close.is_cancelled();
    match t.iter().find(open) {
        Some(c) => {
            c.close.cancel();
            true
        }
        None => false,
    }
}

/// Serves `app` on `listener` until `cancel`.
pub async fn run(listener: TcpListener, app: Router, limits: Limits, cancel: CancellationToken) {
    closed();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let table: Arc<Table> = Arc::new(Mutex::new(VecDeque::new()));
    let mut accept_errors = LogThrottle::new(Duration::from_secs(10));
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if let Some(suppressed) = accept_errors.ready() {
                        warn!(error = %e, suppressed, "HTTP listener cannot accept");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if evict_oldest(&table) => {
                count("evicted");
                match tokio::time::timeout(EVICT_WAIT, slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        refuse(tcp);
                        continue;
                    }
                }
            }
            Err(_) => {
                refuse(tcp);
                continue;
            }
        };
        let conn = Arc::new(Conn {
            proven: AtomicBool::new(false),
            close: cancel.child_token(),
        });
        lock(&table).push_back(conn.clone());
        let (app, table, timeout) = (app.clone(), table.clone(), limits.header_timeout);
        tokio::spawn(async move {
            serve_one(tcp, app, conn.clone(), timeout).await;
            lock(&table).retain(|c| !Arc::ptr_eq(c, &conn));
            drop(permit);
        });
    }
}

/// Answers 503 without reading and closes (never waits: the socket's send
/// buffer takes the few bytes).
fn refuse(tcp: TcpStream) {
    count("refused");
    let _ = tcp.try_write(REFUSAL);
}

/// One connection, until it ends, times out or is closed to make room.
async fn serve_one(tcp: TcpStream, app: Router, conn: Arc<Conn>, header_timeout: Duration) {
    let _ = tcp.set_nodelay(true);
    let marker = conn.clone();
    let peer = tcp.peer_addr().ok().map(|a| a.ip().to_string());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        marker.proven.store(true, Ordering::Relaxed);
        // the address for the login guard: set here, whatever the client sent
        let headers = req.headers_mut();
        headers.remove(super::page::PEER_HEADER);
        if let Some(v) = peer.as_deref().and_then(|p| p.parse().ok()) {
            headers.insert(super::page::PEER_HEADER, v);
        }
        tower_service::Service::call(&mut app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD);
    let served = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::select! {
        r = served => match r {
            // after a request: an idle keep-alive connection, closed quietly
            Err(e) if e.is_timeout() && conn.proven.load(Ordering::Relaxed) => {
                debug!("idle HTTP connection closed");
            }
            Err(e) if e.is_timeout() => count("header_timeout"),
            Err(e) => debug!(error = %e, "HTTP connection ended"),
            Ok(()) => {}
        },
        _ = conn.close.cancelled() => {}
    }
}
