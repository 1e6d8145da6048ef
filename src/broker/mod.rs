//! fieldgate's own MQTT 3.1 / 3.1.1 broker: the embedded broker that HMIs,
//! Node-RED and MQTT tools on the site talk to, and that the gateway
//! publishes into in-process.
//!
//! Files, one responsibility each: [`config`] (`broker:`), [`packet`]
//! (strict decoding, encoding), [`topics`] (names, filters, the
//! subscription tree), [`message`], [`session`] (queues, limits; its
//! `flight` child: in-flight window and acks), [`router`] (routing,
//! retained, intake; its `lifecycle` child: takeover, clean sessions,
//! restore), [`connection`] (one client; its `handlers` child: packets)
//! and [`writer`], [`listener`] (plain, TLS,
//! websocket), [`auth`] and [`acl`], [`store`] (SQLite: persistent
//! sessions and retained messages), [`sys`] (`$SYS`), [`stats`], [`api`]
//! (the in-process [`BrokerHandle`]). What it guarantees and drops is in
//! `docs/design.md` ("Embedded broker"). Must not know about devices,
//! rules or the outbox: the bridge plugs in through [`Intake`].

pub mod acl;
pub mod api;
pub mod auth;
mod clients;
mod config;
mod connection;
mod figures;
mod listener;
pub mod message;
pub mod packet;
mod passwd;
pub mod router;
mod session;
pub mod stats;
pub mod store;
mod sys;
mod tls;
pub mod topics;
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

pub use api::{BrokerHandle, valid_publish_topic};
pub use config::{AclRule, BrokerConfig, BrokerTls};
pub use message::Message;
pub use router::{Durable, Intake};
pub use tls::acceptor;

use connection::Ctx;
use listener::{Kind, Slots};
use router::Router;
use session::Limits;

/// In-process subscribers use no connection slot (kept for tests that
/// count slots).
pub const LOCAL_LINKS: usize = 0;
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

/// The running broker.
pub struct Broker {
    handle: BrokerHandle,
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
        let auth = auth::Auth::new(cfg)?;
        let plain = bind(cfg.listen).await?;
        let tls = match &cfg.tls {
            Some(t) => Some((bind(t.listen).await?, tls::acceptor(t)?)),
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
        let limits = Limits {
            max_queued_messages: cfg.max_queued_messages.max(1),
            max_queued_bytes: cfg
                .max_queued_bytes
                .as_usize()
                .max(cfg.max_payload.as_usize()),
            max_spooled_bytes: cfg.max_spooled_bytes.bytes(),
            max_inflight: cfg.max_inflight.max(1) as usize,
        };
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
        crate::metrics::get().set_collector("broker", Arc::new(figures::Figures::of(&router)));
        let ctx = Arc::new(Ctx {
            router: router.clone(),
            auth,
            max_payload: cfg.max_payload.as_usize(),
            shutdown: CancellationToken::new(),
        });
        let cancel = ctx.shutdown.clone();
        let tracker = TaskTracker::new();
        let slots = Slots::new(cfg.max_connections);
        let mut listeners = vec![(plain, Kind::Plain)];
        if let Some((l, a)) = tls {
            listeners.push((l, Kind::Tls(a)));
        }
        if let Some(l) = ws {
            listeners.push((l, Kind::Websocket));
        }
        for (l, kind) in listeners {
            tracker.spawn(
                listener::run(
                    l,
                    kind,
                    ctx.clone(),
                    slots.clone(),
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
        info!(listen = %cfg.listen, "embedded broker listening");
        Ok(Broker {
            handle: BrokerHandle { router },
            cancel,
            tracker,
        })
    }

    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
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
