//! fieldgate's own MQTT 3.1 / 3.1.1 / 5.0 broker: the embedded broker that HMIs,
//! Node-RED and MQTT tools on the site talk to, and that the gateway
//! publishes into in-process.
//!
//! Its public face is its in-process [`BrokerHandle`], its config
//! ([`BrokerConfig`], with [`AclRule`] and [`BrokerTls`]) and its errors
//! ([`BrokerError`]). The rest of the crate also reaches [`Broker`] (start,
//! stop: the wiring), [`Message`], [`Intake`], `valid_publish_topic` and
//! the `acl`, `auth` and `topics` modules, all `pub(crate)`. The files
//! behind it are listed in `docs/design.md` ("Files of `src/broker/`"),
//! with what it guarantees, drops and limits ("Embedded broker"). Must not
//! know about devices, rules or the outbox: the bridge plugs in through
//! [`Intake`].

pub(crate) mod acl;
mod aliases;
pub(crate) mod auth;
mod clients;
mod config;
mod connection;
mod handle;
mod limits;
mod listener;
mod login_guard;
mod message;
mod metrics;
mod packet;
mod passwd;
mod persist;
mod router;
mod session;
mod stats;
mod store;
mod subscription;
mod sys;
mod tls;
pub(crate) mod topics;
mod validate;
mod writer;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use stats::add;

pub use config::{AclRule, BrokerConfig, BrokerTls};
pub use handle::BrokerHandle;
pub(crate) use handle::valid_publish_topic;
pub(crate) use message::Message;
pub(crate) use router::Intake;

use connection::Ctx;
use limits::Limits;
use listener::{Kind, Pending};
use router::Router;

/// Spooled rows of a persistent session loaded at start.
const PRELOAD: usize = 1000;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("broker user {username}: {reason}")]
    User { username: String, reason: String },
    #[error("broker authentication: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("broker TLS {path}: {reason}")]
    Tls {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// The limits of `cfg`, with the floors the broker needs.
fn limits_of(cfg: &BrokerConfig) -> Limits {
    Limits {
        max_queued_messages: cfg.max_queued_messages.max(1),
        max_queued_bytes: cfg
            .max_queued_bytes
            .as_usize()
            .max(cfg.max_payload.as_usize()),
        max_spooled_bytes: cfg.max_spooled_bytes.bytes(),
        max_inflight: cfg.max_inflight.max(1) as usize,
        max_client_buffer: cfg.max_client_buffer.as_usize(),
        max_topic_levels: cfg.max_topic_levels.max(1),
        max_subscriptions: cfg.max_subscriptions_per_client.max(1),
        max_retained_messages: cfg.max_retained_messages,
        max_retained_bytes: cfg.max_retained_bytes.bytes(),
        max_sessions: cfg.max_sessions,
        max_store_bytes: cfg.max_store_bytes.bytes(),
        session_expiry: cfg.persistent_session_expiry.get(),
        connect_timeout: cfg.connect_timeout.get(),
        max_session_expiry: cfg.max_session_expiry.get(),
        max_topic_alias: cfg.max_topic_alias,
        max_keepalive: cfg.max_keepalive,
        validate_utf8: cfg.validate_utf8_payloads,
        receive_maximum: cfg.max_inflight.max(1),
    }
}

/// Removes persistent sessions of clients that have not come back within
/// their expiry (`persistent_session_expiry` at 3.1.1, the client's own
/// at 5.0), looking every second (or a quarter of a shorter
/// `persistent_session_expiry`), until `cancel`.
async fn expire_sessions(router: Arc<Router>, cancel: CancellationToken) {
    let every = (router.limits.session_expiry / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = router.expire_sessions(std::time::Instant::now());
        if n > 0 {
            add(&router.stats.sessions_expired, n as u64);
            info!(
                sessions = n,
                expiry = ?router.limits.session_expiry,
                "persistent sessions of clients that did not come back removed"
            );
        }
    }
}

/// The running broker.
pub(crate) struct Broker {
    handle: BrokerHandle,
    /// The logins, shared with the status page (one failure count per
    /// address for MQTT and the page).
    auth: Arc<auth::Auth>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Listen { addr, source })
}

impl Broker {
    /// Binds every listener (a taken port is an error naming it), opens
    /// the store under `data_dir` (a store that cannot be opened leaves the
    /// broker running without persistence, logged), restores persistent
    /// sessions and retained messages, and starts serving.
    pub async fn start(cfg: &BrokerConfig, data_dir: &Path) -> Result<Broker, BrokerError> {
        let auth = Arc::new(auth::Auth::new(cfg)?);
        let plain = match cfg.listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let tls = match &cfg.tls {
            Some(t) => Some((bind(t.listen).await?, tls::acceptor(t)?)),
            None => None,
        };
        let wss = match cfg.tls.as_ref().and_then(|t| t.websocket.map(|w| (t, w))) {
            Some((t, addr)) => Some((bind(addr).await?, tls::acceptor(t)?)),
            None => None,
        };
        let ws = match cfg.websocket {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let store = match std::fs::create_dir_all(data_dir) {
            Ok(()) => match store::Store::open(data_dir, PRELOAD).await {
                Ok(s) => Some(s),
                Err(e) => {
                    error!(error = %e, "broker store unusable: sessions and retained messages are kept in memory only");
                    None
                }
            },
            Err(e) => {
                error!(dir = %data_dir.display(), error = %e, "data_dir not writable: broker sessions and retained messages are kept in memory only");
                None
            }
        };
        let limits = limits_of(cfg);
        let acl = cfg.acl.as_deref().map(acl::Acl::new);
        let (store, loaded) = match store {
            Some((s, l)) => (Some(s), l),
            None => (None, store::Loaded::default()),
        };
        if let Some(p) = &loaded.set_aside {
            warn!(set_aside = %p.display(), "broker store was unreadable; set aside, started fresh");
        }
        let router = Arc::new(Router::new(limits, store, acl));
        router.restore(loaded);
        crate::metrics::get().set_collector("broker", Arc::new(metrics::Figures::of(&router)));
        let ctx = Arc::new(Ctx {
            router: router.clone(),
            auth,
            max_payload: cfg.max_payload.as_usize(),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
            websocket_origins: cfg.websocket_origins.clone().into(),
            limits,
            shutdown: CancellationToken::new(),
        });
        let cancel = ctx.shutdown.clone();
        let tracker = TaskTracker::new();
        let pending = Pending::new(cfg.max_pending_connections);
        let mut listeners = Vec::new();
        if let Some(l) = plain {
            listeners.push((l, Kind::Plain));
        }
        if let Some((l, a)) = tls {
            listeners.push((l, Kind::Tls(a)));
        }
        if let Some(l) = ws {
            listeners.push((l, Kind::Websocket));
        }
        if let Some((l, a)) = wss {
            listeners.push((l, Kind::SecureWebsocket(a)));
        }
        for (l, kind) in listeners {
            tracker.spawn(
                listener::run(
                    l,
                    kind,
                    ctx.clone(),
                    pending.clone(),
                    cancel.clone(),
                    tracker.clone(),
                )
                .instrument(info_span!("broker")),
            );
        }
        let sys = cfg.sys_interval.get();
        if !sys.is_zero() {
            tracker.spawn(sys::run(router.clone(), sys, cancel.clone()));
        }
        tracker.spawn(expire_sessions(router.clone(), cancel.clone()));
        info!(listen = ?cfg.listen, "embedded broker listening");
        Ok(Broker {
            handle: BrokerHandle { router },
            auth: ctx.auth.clone(),
            cancel,
            tracker,
        })
    }

    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// The broker's login check, for the status page.
    pub fn logins(&self) -> Arc<dyn crate::ports::PasswordCheck> {
        self.auth.clone()
    }

    /// Stops the listeners, closes every client connection (no wills: the
    /// clients did nothing wrong) and commits the store, within `deadline`.
    pub async fn stop(self, deadline: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("broker connections did not close in time");
        }
        if let Some(store) = &self.handle.router.store {
            store.close(deadline).await;
        }
    }
}
