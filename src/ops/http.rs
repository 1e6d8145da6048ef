//! The metrics and health HTTP endpoint (`metrics.listen`): Prometheus text
//! at `/metrics`, JSON at `/healthz`.
//!
//! Owns `MetricsConfig` and the axum server. Must not change pipeline state:
//! it only reads [`super::metrics`].

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerHandle;
use tracing::{info, warn};

use super::metrics;

/// `metrics:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint, loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
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

async fn prometheus(broker: BrokerHandle) -> impl IntoResponse {
    let m = metrics::get();
    m.refresh_broker(&broker.stats());
    m.refresh_bridge();
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
    m.refresh_bridge();
    let devices = m.devices();
    let (online, total) = m.devices_online();
    let outbox = m.outbox_problem();
    let body = serde_json::json!({
        "status": if online == total && outbox.is_none() { "ok" } else { "degraded" },
        "outbox": outbox.as_deref().unwrap_or("ok"),
        "gateway": gateway,
        "uptime_s": m.uptime_secs(),
        "devices_online": online,
        "devices_total": total,
        "devices": devices,
        "uplink_connected": m.uplink_connected.get() == 1,
        "outbox_depth": m.outbox_depth.get(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// Binds `cfg.listen` and serves until `cancel` fires.
pub async fn serve(
    cfg: &MetricsConfig,
    gateway: String,
    broker: BrokerHandle,
    cancel: CancellationToken,
) -> Result<(), HttpError> {
    let addr = cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Listen { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(move || prometheus(broker.clone())))
        .route("/healthz", get(move || healthz(gateway.clone())));
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
