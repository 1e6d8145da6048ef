//! The live status page at `/` on the HTTP listener, its assets (compiled
//! in from `src/ops/page/`, no CDN), the server-sent events at `/events`
//! and the JSON API routes (`/api/v1/...`, built by [`super::api`] and,
//! for the history documents and the clients, [`super::history`]).
//!
//! Owns the routes, HTTP basic auth for them (checked by the
//! [`PasswordCheck`] the wiring hands in) and the stream limit. Costs
//! nothing when nobody looks: a document is built only for a request or
//! for an open event stream (one every [`EVENT_INTERVAL`]). Read-only:
//! must not change pipeline state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;

use super::api::Api;
use super::history::{Histories, csv};
use crate::ports::PasswordCheck;

/// How often an open page gets a new document.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(2);
/// Event streams open at once; one more is answered 503 (drop policy: the
/// page falls back to its last document and the browser retries).
pub const MAX_STREAMS: usize = 16;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const CHART: &str = include_str!("page/chart.js");
const STYLE: &str = include_str!("page/page.css");

/// What the page's routes share.
pub struct Page {
    api: Api,
    histories: Histories,
    /// `None`: no users configured, no login asked.
    auth: Option<Arc<dyn PasswordCheck>>,
    streams: AtomicUsize,
}

impl Page {
    pub fn new(api: Api, histories: Histories, auth: Option<Arc<dyn PasswordCheck>>) -> Page {
        Page {
            api,
            histories,
            auth,
            streams: AtomicUsize::new(0),
        }
    }

    /// `true` when the request may see the page. A login from an address
    /// that failed too often is refused (`broker.login_failures`).
    fn allowed(&self, headers: &HeaderMap) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        let Some((user, pass)) = basic_credentials(headers) else {
            return false;
        };
        let peer = headers
            .get(PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match peer {
            Some(ip) => auth.check_from(ip, &user, pass.as_bytes()),
            None => auth.check(&user, pass.as_bytes()),
        }
    }
}

/// The header the listener sets to the client's address (replacing any
/// the client sent), for the login guard.
pub const PEER_HEADER: &str = "x-fieldgate-peer";

/// `user:password` of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fieldgate\", charset=\"UTF-8\""),
        )],
        "login required\n",
    )
        .into_response()
}

fn json(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(p): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    // the first document is in the page, so it shows at once (and without
    // a second request); `<` is escaped so the JSON cannot end the script
    let initial = p.api.status().to_string().replace('<', "\\u003c");
    let html = INDEX.replace("/*INITIAL*/null", &initial);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn asset(
    State(p): State<Arc<Page>>,
    headers: HeaderMap,
    body: &'static str,
    kind: &'static str,
) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn status(State(p): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    json(p.api.status().to_string())
}

async fn device(
    State(p): State<Arc<Page>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    match p.api.device(&name) {
        Some(d) => json(d.to_string()),
        None => not_found(format!("no device named {name:?}")),
    }
}

fn not_found(error: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": error }).to_string(),
    )
        .into_response()
}

/// `GET /api/v1/devices/{device}/points/{point}/history`, JSON or (with
/// `?format=csv`) a CSV download.
async fn point_history(
    State(p): State<Arc<Page>>,
    Path((device, point)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    let (doc, h) = match p.histories.point(&device, &point) {
        Ok(found) => found,
        Err(e) => return not_found(e.to_string()),
    };
    let wants_csv = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=csv"));
    if !wants_csv {
        return json(doc.to_string());
    }
    let name = format!("{device}-{point}-history.csv").replace(['"', '\\', '/'], "_");
    let disposition = format!("attachment; filename=\"{name}\"");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        csv(&h),
    )
        .into_response()
}

/// A history document (`/api/v1/history`, `/uplink/history`, `/clients`).
async fn document(
    State(p): State<Arc<Page>>,
    headers: HeaderMap,
    make: fn(&Histories) -> serde_json::Value,
) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    json(make(&p.histories).to_string())
}

/// Gives a stream slot back when the stream ends (the browser left).
struct Slot(Arc<Page>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(p): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if !p.allowed(&headers) {
        return unauthorized();
    }
    if p.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        p.streams.fetch_sub(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many open pages\n").into_response();
    }
    let slot = Slot(p);
    let mut tick = tokio::time::interval(EVENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold((slot, tick), |(slot, mut tick)| async move {
        tick.tick().await;
        let data = slot.0.api.status().to_string();
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(data)),
            (slot, tick),
        ))
    });
    Sse::new(stream).into_response()
}

/// The page's routes, to merge into the HTTP listener's router.
pub fn router(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/assets/page.js",
            get(|s, h| asset(s, h, SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/chart.js",
            get(|s, h| asset(s, h, CHART, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/page.css",
            get(|s, h| asset(s, h, STYLE, "text/css; charset=utf-8")),
        )
        .route("/events", get(events))
        .route("/api/v1/status", get(status))
        .route("/api/v1/devices/{name}", get(device))
        .route(
            "/api/v1/devices/{name}/points/{point}/history",
            get(point_history),
        )
        .route(
            "/api/v1/history",
            get(|s, h| document(s, h, Histories::all)),
        )
        .route(
            "/api/v1/uplink/history",
            get(|s, h| document(s, h, Histories::uplink)),
        )
        .route(
            "/api/v1/clients",
            get(|s, h| document(s, h, Histories::clients)),
        )
        .with_state(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic aG1pOnNlY3JldDpwYXJ0"),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("hmi".into(), "secret:part".into()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
    }
}
