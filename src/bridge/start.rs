//! The pieces of [`Bridge::start`](super::Bridge::start): opening the
//! outbox (or saying why the uplink is off), and starting each task of
//! the bridge with the channels between them.
//!
//! Owns the wiring of those tasks. Must not keep anything: the handles it
//! returns are `mod.rs`'s, which stops them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};

use super::behind::Behind;
use super::clients::ClientPublishes;
use super::config::{self, UplinkConfig};
use super::counters::Counters;
use super::outbox::{self, Progress, WriteCmd};
use super::own::OwnPublishes;
use super::route::Route;
use super::{command_props, forward, upstream};
use crate::broker::BrokerHandle;
use crate::reading::Publish;

/// Opens the outbox, setting a broken file aside; `None` (the uplink is
/// off, said in the log and on `/healthz`) when it cannot be opened.
pub(super) async fn open_outbox(
    data_dir: &Path,
    cfg: &UplinkConfig,
    counters: &Arc<Counters>,
) -> Option<outbox::Opened> {
    let metrics = crate::metrics::get();
    let opened = match outbox::open_or_set_aside(data_dir, &cfg.buffer, counters).await {
        Ok(o) => o,
        Err(e) => {
            // local operation goes on; nothing is forwarded
            error!(error = %e, "uplink off: the outbox cannot be opened; \
                local clients and devices keep working, nothing is forwarded upstream");
            metrics.set_outbox_problem(format!("uplink off: {e}"));
            return None;
        }
    };
    if let Some((to, why)) = &opened.set_aside {
        super::metrics::get().outbox_set_aside.inc();
        error!(moved_to = %to.display(), error = %why,
            "the outbox file was broken: set aside, a fresh outbox is in use \
             (the messages it held are not sent)");
        metrics.set_outbox_problem(format!(
            "broken outbox set aside as {} ({why}); a fresh outbox is in use",
            to.display()
        ));
    }
    Some(opened)
}

/// What the bridge's tasks are started with once the outbox is open.
pub(super) struct Wiring {
    pub(super) cfg: Arc<UplinkConfig>,
    pub(super) gateway: Arc<str>,
    pub(super) counters: Arc<Counters>,
    /// The gateway status topic, which neither door forwards.
    pub(super) status_topic: String,
    /// To the outbox writer.
    pub(super) writer: mpsc::Sender<WriteCmd>,
    /// To the forwarder, sent live (not buffered).
    pub(super) live: mpsc::Sender<Publish>,
    /// To the local broker publisher.
    pub(super) local: mpsc::Sender<Publish>,
    /// The write-behind memory queue (`buffer.write_behind`), when on.
    pub(super) behind: Option<Arc<Behind>>,
}

/// A task and the token that stops it.
pub(super) type Stoppable = (JoinHandle<()>, CancellationToken);

impl Wiring {
    /// Write-behind's spill task (what is in memory too long or at the
    /// bound goes to the outbox), when write-behind is on.
    pub(super) fn start_spill(&self) -> Option<Stoppable> {
        self.behind.clone().map(|b| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(
                b.run(self.writer.clone(), stop.clone())
                    .instrument(info_span!("write_behind")),
            );
            (task, stop)
        })
    }

    /// The forwarder (and, for MQTT 5 commands with their response topic,
    /// correlation data and user properties, their publisher through the
    /// broker handle): the outbox to the upstream connection.
    pub(super) fn start_forwarder(
        &self,
        opts: upstream::Options,
        (pool, progress): (SqlitePool, Progress),
        live: mpsc::Receiver<Publish>,
        flush: watch::Receiver<Option<Duration>>,
        broker: Option<&BrokerHandle>,
    ) -> (JoinHandle<()>, Option<JoinHandle<()>>) {
        let cfg = &self.cfg;
        let (command_props, command_props_task) = match broker {
            Some(b) if cfg.protocol == config::Protocol::V5 && !cfg.commands.is_empty() => {
                let (tx, task) = command_props::start(b.clone());
                (Some(tx), Some(task))
            }
            _ => (None, None),
        };
        // room for the whole window plus status, subscribe and disconnect
        // requests: the forwarder never waits for room (see forward/)
        let (client, requests) = upstream::Client::new(cfg.inflight as usize + 64);
        let uplink = upstream::Link::new(opts, requests, cfg.reconnect, self.counters.clone());
        let forwarder = forward::Forwarder {
            command_props,
            cfg: cfg.clone(),
            gateway: self.gateway.clone(),
            client,
            pool,
            writer: self.writer.clone(),
            progress,
            live,
            commands: (!cfg.commands.is_empty()).then(|| self.local.clone()),
            counters: self.counters.clone(),
            flush,
            behind: self.behind.clone(),
        };
        let task = tokio::spawn(
            forwarder
                .run(uplink)
                .instrument(info_span!("uplink", url = %cfg.url)),
        );
        (task, command_props_task)
    }

    /// The local clients' door, registered with the broker as its intake.
    pub(super) fn start_clients(
        &self,
        broker: &BrokerHandle,
    ) -> (JoinHandle<()>, CancellationToken, ClientPublishes) {
        let cancel = CancellationToken::new();
        let (intake, task) = ClientPublishes::start(
            Route::new(self.cfg.clone(), self.status_topic.clone()),
            self.writer.clone(),
            self.live.clone(),
            self.counters.clone(),
            cancel.clone(),
        );
        broker.set_intake(Arc::new(intake.clone()));
        (task, cancel, intake)
    }

    /// The gateway's own publishes' door: reads `from_rules` until it
    /// closes.
    pub(super) fn start_own(self, from_rules: mpsc::Receiver<Publish>) -> JoinHandle<()> {
        let own = OwnPublishes {
            route: Route::new(self.cfg, self.status_topic),
            writer: self.writer,
            live: self.live,
            local: self.local,
            counters: self.counters,
            behind: self.behind,
        };
        tokio::spawn(own.run(from_rules).instrument(info_span!("bridge_intake")))
    }
}

/// Logs what the opened outbox holds.
pub(super) fn log_opened(data_dir: &Path, counters: &Counters) {
    info!(
        path = %outbox::db_path(data_dir).display(),
        messages = counters.depth.load(Relaxed),
        bytes = counters.depth_bytes.load(Relaxed),
        "outbox open"
    );
}
