//! The HTTP listener (`http:`, also accepted as `metrics:`): Prometheus text
//! at `/metrics`, JSON at `/healthz`, and the status page with its JSON API
//! (routes in [`super::page`]).
//!
//! Owns `HttpConfig` (with the listener's limits and the history's
//! shape) and the routes; the accept loop with its limits is
//! [`super::listen`]. Must not change pipeline state:
//! it only reads `crate::metrics` (after [`crate::metrics::Metrics::collect`],
//! so the stages' registered figures are current); it imports no stage.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{LoginUser, Report, TimeSpan};
use crate::metrics;

/// `http:` (also read under its older name `metrics:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint, loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Logins for the status page and `/api/v1` (HTTP basic). Without
    /// them the broker's `users` / `password_file` are used; with neither,
    /// no login is asked (the wiring picks the store, see `lib.rs`).
    #[serde(default)]
    pub users: Vec<LoginUser>,
    /// Connections open at once (past it: see `listen.rs`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request head must arrive within this; also the idle keep-alive
    /// timeout.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: TimeSpan,
    /// How far back the page's trends go (in memory only).
    #[serde(default = "default_history")]
    pub history: TimeSpan,
    /// min / avg / max per bucket of this length.
    #[serde(default = "default_history_bucket")]
    pub history_bucket: TimeSpan,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9181))
}
fn default_max_connections() -> usize {
    64
}
fn default_header_timeout() -> TimeSpan {
    TimeSpan::from_secs(10)
}
fn default_history() -> TimeSpan {
    TimeSpan::from_secs(3600)
}
fn default_history_bucket() -> TimeSpan {
    TimeSpan::from_secs(30)
}

impl HttpConfig {
    /// The checks of the section named `at` (`http` or `metrics`).
    pub(crate) fn validate(&self, at: &str, report: &mut Report) {
        if self.max_connections == 0 {
            report.add(format!("{at}.max_connections"), "must be at least 1");
        }
        if self.header_timeout.get() < std::time::Duration::from_millis(100) {
            report.add(format!("{at}.header_timeout"), "must be at least 100ms");
        }
        let (span, bucket) = (self.history.get(), self.history_bucket.get());
        if bucket < std::time::Duration::from_secs(1) || bucket > span {
            report.add(
                format!("{at}.history_bucket"),
                format!("must be between 1s and `history` ({})", self.history),
            );
        } else if span.as_millis() / bucket.as_millis()
            > crate::recent::history::MAX_BUCKETS as u128
        {
            report.add(
                format!("{at}.history"),
                format!(
                    "at most {} buckets of `history_bucket` ({}): make the bucket longer",
                    crate::recent::history::MAX_BUCKETS,
                    self.history_bucket
                ),
            );
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("metrics endpoint cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

async fn prometheus() -> impl IntoResponse {
    let m = metrics::get();
    m.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz(gateway: String) -> impl IntoResponse {
    let m = metrics::get();
    m.collect();
    let devices = m.devices();
    let (online, total) = m.devices_online();
    let outbox = m.outbox_problem();
    let disk = m.disk_problem();
    let uplink = m.uplink();
    let code = match disk {
        Some(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
        None => axum::http::StatusCode::OK,
    };
    let body = serde_json::json!({
        "status": if online == total && outbox.is_none() { "ok" } else { "degraded" },
        "outbox": outbox.as_deref().unwrap_or("ok"),
        "disk": disk.as_deref().unwrap_or("ok"),
        "gateway": gateway,
        "uptime_s": m.uptime_secs(),
        "devices_online": online,
        "devices_total": total,
        "devices": devices,
        "uplink_connected": uplink.is_some_and(|u| u.connected),
        "outbox_depth": uplink.map_or(0, |u| u.outbox_depth),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// Binds `cfg.listen` and serves until `cancel` fires.
pub async fn serve(
    cfg: &HttpConfig,
    gateway: String,
    page: Arc<super::page::Page>,
    cancel: CancellationToken,
) -> Result<(), HttpError> {
    let addr = cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Listen { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(prometheus))
        .route("/healthz", get(move || healthz(gateway.clone())))
        .merge(super::page::router(page));
    super::history::register_metrics();
    info!(%addr, "metrics and health endpoint listening");
    let limits = super::listen::Limits {
        max_connections: cfg.max_connections,
        header_timeout: cfg.header_timeout.get(),
    };
    tokio::spawn(super::listen::run(listener, app, limits, cancel));
    Ok(())
}
