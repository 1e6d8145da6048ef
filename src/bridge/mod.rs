//! The store-and-forward bridge (`uplink:`): forwards local MQTT traffic to
//! an upstream broker and keeps QoS 1/2 messages in a SQLite outbox while
//! the uplink is down; subscribes to command topics upstream and publishes
//! them locally.
//!
//! Owns `uplink:` ([`UplinkConfig`]): the outbox, the upstream client, the
//! drain state machine and its send cursor, the gateway's own publishes,
//! the local clients' intake, poison messages and dead letters, the
//! forward and command filters, its part of `fieldgate check` and the
//! `fieldgate outbox` commands (which file holds what: docs/design.md,
//! "Files of `src/bridge/`"). Must not know about devices or rules: it
//! sees [`Publish`]es.
//!
//! # What enters the outbox
//! - The gateway's own publishes (rules, device status) whose local topic
//!   matches a `forward` filter: the intake commits them *before* it hands
//!   them to the local broker, so a message counts as published only once
//!   it is durable. The upstream topic is `prefix + topic`, the QoS the
//!   forward entry's `qos`; a QoS 0 entry sends live and never buffers.
//! - QoS 1/2 forwarded messages that local clients publish on the embedded
//!   broker, committed before the broker acknowledges them (`clients.rs`).
//! - Not the gateway status `{gateway}/status`: the bridge says `online`
//!   upstream on every connect, `offline` on shutdown, and the broker
//!   publishes the `offline` last will if the gateway vanishes.
//!
//! # Guarantees
//! - A row is deleted only after PUBACK (QoS 1) or PUBCOMP (QoS 2).
//! - Rows go upstream in commit order (`drain: fifo`), or, with
//!   `live_first`, rows committed since the last connect first and the
//!   backlog behind them, each in commit order. At most `inflight` messages
//!   are sent and still in the outbox (unacknowledged, or acknowledged and
//!   not yet deleted) at any time.
//! - Outages and restarts: the client id is fixed and every connection
//!   resumes the session (`clean_session = false`), so commands queued
//!   upstream while the gateway was down arrive. Each row's packet id is
//!   a function of its row id and a QoS 2 row is marked `released` before
//!   its PUBREL goes (`upstream`'s module doc): unacknowledged messages are
//!   sent again with the same packet ids, the broker drops QoS 2
//!   duplicates, so QoS 2 is not duplicated, across a SIGKILL too; QoS 1
//!   may be (at most the in-flight window, because a message keeps its
//!   window slot until its delete is committed). If the broker lost the
//!   session (restart without persistence, session expiry), every
//!   unacknowledged row is sent again from the outbox as a new message.
//! - Crash (SIGKILL, power loss with `synchronous: full`): every committed
//!   row is still there and is sent after the restart.
//! - Capacity: see the `outbox` module; every drop is counted in [`Counters`].
//! - The gateway never stops because of the bridge: commit failures (full
//!   disk) are logged and counted and the messages go live if connected.

mod behind;
mod cli;
mod clients;
mod command_props;
pub mod config;
mod counters;
mod cursor;
mod describe;
pub mod filters;
mod forward;
mod metrics;
pub mod outbox;
mod own;
mod poison;
mod route;
mod start;
pub mod upstream;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

pub use cli::{OutboxCommand, run_cli};
pub use config::UplinkConfig;
pub use counters::Counters;
pub use describe::describe;

use crate::reading::Publish;

/// Capacity of the channel to the outbox writer (commands, each a batch).
const WRITER_CAPACITY: usize = 1024;
/// Capacity of the live (unbuffered) channel to the uplink.
const LIVE_CAPACITY: usize = 1024;
/// The most the bridge's stop takes in all (see [`Bridge::stop`]): with
/// the other stages' deadlines it keeps the gateway's stop inside the
/// unit's `TimeoutStopSec=30s`.
pub const STOP_BUDGET: Duration = Duration::from_secs(10);
/// How long the stop waits for each intake's last commit.
const INTAKE_WAIT: Duration = Duration::from_secs(2);
/// What the stop keeps for the writer's last commit.
const WRITER_WAIT: Duration = Duration::from_secs(1);

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
}

/// A running bridge.
pub struct Bridge {
    pub counters: Arc<Counters>,
    /// `None` when the bridge is off (no outbox could be opened).
    tasks: Option<Tasks>,
}

struct Tasks {
    intake: JoinHandle<()>,
    link: Option<(JoinHandle<()>, CancellationToken, clients::ClientPublishes)>,
    forwarder: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Tells the forwarder to flush, and for how long.
    flush: watch::Sender<Option<Duration>>,
    /// Write-behind's spill task and its stop.
    spill: Option<start::Stoppable>,
    /// Publishes MQTT 5 commands with their request/response properties.
    command_props: Option<JoinHandle<()>>,
}

impl Bridge {
    /// A bridge that forwards nothing: the gateway's publishes go straight
    /// to the local broker.
    fn off(counters: Arc<Counters>) -> Bridge {
        Bridge {
            counters,
            tasks: None,
        }
    }

    /// Opens the outbox and starts the bridge. `from_rules` carries the
    /// gateway's own publishes; the returned receiver (`local_capacity`
    /// messages, commands from upstream among them) is what the local
    /// broker publisher must read instead (committed first when forwarded).
    pub async fn start(
        cfg: &UplinkConfig,
        gateway: &str,
        data_dir: &Path,
        from_rules: mpsc::Receiver<Publish>,
        local_capacity: usize,
        broker: Option<crate::broker::BrokerHandle>,
    ) -> Result<(Bridge, mpsc::Receiver<Publish>), BridgeError> {
        let cfg = Arc::new(cfg.clone());
        let gateway: Arc<str> = gateway.into();
        let counters = Arc::new(Counters::default());
        // the bridge's metrics exist from its start
        self::metrics::get();
        crate::metrics::get().set_collector("bridge", counters.clone());
        let opts = upstream::options(&cfg, &gateway)?;
        let Some(opened) = start::open_outbox(data_dir, &cfg, &counters).await else {
            return Ok((Bridge::off(counters), from_rules));
        };
        let (live_tx, live_rx) = mpsc::channel(LIVE_CAPACITY);
        let writer = (opened.writer)
            .with_live(live_tx.clone())
            .with_flush_at(usize::from(cfg.inflight) / 4);
        start::log_opened(data_dir, &counters);
        let (write_tx, write_rx) = mpsc::channel(WRITER_CAPACITY);
        let writer = tokio::spawn(writer.run(write_rx).instrument(info_span!("outbox")));
        let (local_tx, local_rx) = mpsc::channel(local_capacity);
        let wiring = start::Wiring {
            status_topic: crate::reading::status::gateway_topic(&gateway),
            behind: (cfg.buffer.write_behind)
                .map(|w| behind::Behind::new(w.get(), counters.clone())),
            cfg,
            gateway,
            counters: counters.clone(),
            writer: write_tx,
            live: live_tx,
            local: local_tx,
        };
        let spill = wiring.start_spill();
        let (flush, flush_rx) = watch::channel(None);
        let outbox = (opened.pool, opened.progress);
        let (forwarder, command_props) =
            wiring.start_forwarder(opts, outbox, live_rx, flush_rx, broker.as_ref());
        let link = broker.map(|b| wiring.start_clients(&b));
        let intake = wiring.start_own(from_rules);
        let tasks = Tasks {
            intake,
            link,
            forwarder,
            writer,
            flush,
            spill,
            command_props,
        };
        Ok((
            Bridge {
                counters,
                tasks: Some(tasks),
            },
            local_rx,
        ))
    }

    /// Takes no new message from local clients (the gateway begins to
    /// stop): their connections are closed without an acknowledgement, so
    /// nothing is acknowledged that the stop could lose.
    pub fn close_local(&self) {
        if let Some(Tasks {
            link: Some((_, _, intake)),
            ..
        }) = &self.tasks
        {
            intake.close();
        }
    }

    /// Stops in order once the rules channel has closed, within `budget`
    /// in all: the intake commits what it has, the local clients' intake
    /// commits what was offered and takes nothing more, the forwarder
    /// sends what it can with what is left of the budget (less what its
    /// `offline`, DISCONNECT and the writer need), the writer commits the
    /// last acknowledgements. Every wait has a deadline; what is not sent
    /// stays in the outbox.
    pub async fn stop(self, budget: Duration) {
        let Some(t) = self.tasks else { return };
        let now = tokio::time::Instant::now;
        let end = now() + budget;
        if tokio::time::timeout_at((now() + INTAKE_WAIT).min(end), t.intake)
            .await
            .is_err()
        {
            warn!("bridge intake did not drain in time");
        }
        if let Some((task, stop)) = t.spill {
            // write-behind: what is in memory goes to the outbox first
            stop.cancel();
            if tokio::time::timeout_at((now() + INTAKE_WAIT).min(end), task)
                .await
                .is_err()
            {
                warn!("write-behind: the messages in memory were not written in time");
            }
        }
        if let Some((task, cancel, intake)) = t.link {
            intake.close();
            cancel.cancel();
            if tokio::time::timeout_at((now() + INTAKE_WAIT).min(end), task)
                .await
                .is_err()
            {
                warn!("local clients' intake did not commit in time");
            }
        }
        let reserve = forward::OFFLINE_WAIT + forward::DISCONNECT_WAIT * 2 + WRITER_WAIT;
        let flush = end.saturating_duration_since(now()).saturating_sub(reserve);
        // the forwarder may be gone already: nothing to flush then
        let _ = t.flush.send(Some(flush));
        if tokio::time::timeout_at(end - WRITER_WAIT, t.forwarder)
            .await
            .is_err()
        {
            warn!("uplink did not stop in time");
        }
        if tokio::time::timeout_at(end, t.writer).await.is_err() {
            warn!("outbox writer did not finish in time");
        }
        // its sender was the forwarder's: it ends once the queue is published
        if let Some(task) = t.command_props
            && tokio::time::timeout_at(end, task).await.is_err()
        {
            warn!("commands with MQTT 5 properties were not published locally in time");
        }
        let c = &self.counters;
        info!(
            committed = c.committed.load(Relaxed),
            sent = c.sent.load(Relaxed),
            acked = c.acked.load(Relaxed),
            left_in_outbox = c.depth.load(Relaxed),
            dropped_oldest = c.dropped_oldest.load(Relaxed),
            dropped_newest = c.dropped_newest.load(Relaxed),
            expired = c.expired.load(Relaxed),
            live_dropped = c.live_dropped.load(Relaxed),
            io_errors = c.io_errors.load(Relaxed),
            dead = c.dead.load(Relaxed),
            "bridge stopped"
        );
    }
}
