//! The HTTP listener (`http:`, also accepted as `metrics:`): Prometheus text
//! at `/metrics`, JSON at `/healthz`, and the status page with its JSON API
//! (routes in [`super::page`]).
//!
//! Owns `MetricsConfig` and the axum server. Must not change pipeline state:
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
use tracing::{info, warn};

use crate::config::LoginUser;
use crate::metrics;

/// `metrics:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint, loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Logins for the status page and `/api/v1` (HTTP basic). Without
    /// them the broker's `users` / `password_file` are used; with neither,
    /// no login is asked (the wiring picks the store, see `lib.rs`).
    #[serde(default)]
    pub users: Vec<LoginUser>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9181))
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
    cfg: &MetricsConfig,
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
    info!(%addr, "metrics and health endpoint listening");
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}
