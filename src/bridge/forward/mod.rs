//! The forwarder: the drain state machine between the outbox and the
//! upstream connection.
//!
//! Owns the in-flight window, the packet-id map and the
//! upstream connection (it polls [`upstream::next`] itself, so the events
//! of every message need no task hop). Reads committed rows from the
//! outbox (never writes: acknowledgements go to the writer as
//! [`WriteCmd::Ack`], QoS 2 PUBRECs as [`WriteCmd::Release`]), hands them
//! to the link with their packet id ([`upstream::row_pkid`]), and maps
//! `Acked(pkid)` / `Completed(pkid)` back to the row ids to delete. A QoS 2
//! row's PUBREL is asked for only once the writer has committed its
//! `released` mark (see `upstream`'s module doc).
//!
//! Window: a message holds one of the `inflight` slots from the moment it
//! is handed to the link until the writer has deleted its row. So at any
//! time at most `inflight` rows have been sent and are still in the
//! outbox: after a crash, at most `inflight` messages go upstream again.
//!
//! Order: rows are sent in id (commit) order; the bridge's cursor decides
//! which rows come next (`fifo`, `live_first`); the pace holds rows back to
//! `uplink.drain_rate` (live rows of `live_first` excepted). The outbox is read beside the
//! connection (one spawned read at a time), so acknowledgements keep
//! flowing while rows are read.
//!
//! Modes ([`window::Mode`]), one per turn of the drain loop; each arrow is
//! a function of the `report` module:
//!
//! ```text
//!                 on_up (CONNACK)
//!  Disconnected ─────────────────▶ Live
//!       ▲  │   ◀─────────────────   │
//!       │  │     on_down (drop)     │ on_shutdown
//!       │  │ on_shutdown            ▼
//!       │  └──────────────┐      Flushing ── on_down ──────────┐
//!       │                 ▼         │ after_turn (caught up,   ▼
//!   (reconnect        Stopping ◀────┘   or the deadline)    Stopping
//!    after backoff)  {connected}      → stop(): offline, DISCONNECT,
//!                                       last acks to the writer
//! ```
//!
//! Rows are sent (`fill`) and read only while connected (`Live`,
//! `Flushing`). The upstream client sits behind [`upstream::Upstream`] and
//! the link's session behind [`upstream::Resend`], so the transitions have
//! unit tests without a broker.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

use rumqttc::QoS;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::ReusableBoxFuture;
use tracing::{info, warn};

use super::behind::Behind;
use super::config::UplinkConfig;
use super::cursor::{Cursor, Fetch};
use super::outbox::{self, Progress, WriteCmd};
use super::upstream::{self, Client, Link, Report, Upstream};
use crate::bridge::counters::Counters;
use crate::log_throttle::LogThrottle;
use crate::reading::Publish;
use pause::ReadPause;
use window::{Mode, State};

/// How long the stop waits for the PUBACK of `offline` upstream.
pub const OFFLINE_WAIT: Duration = Duration::from_millis(1500);
/// How long the stop reads acknowledgements after its DISCONNECT, and
/// waits to hand the last ones to the writer.
pub const DISCONNECT_WAIT: Duration = Duration::from_millis(1000);

/// A finished outbox read.
type Read = Result<Vec<outbox::Stored>, outbox::OutboxError>;
/// The outbox read in progress: its task, what it reads, and the
/// generation of dropped rows when it started (see `outbox::InFlight`).
type Reading = (JoinHandle<Read>, Fetch, u64);
/// Most connection events handled before the window is refilled.
const EVENTS_PER_TURN: usize = 256;
/// Bytes (topic + payload) handed to the link and not yet acknowledged, at
/// most, whatever the window: the link keeps a copy of each for resending,
/// and large payloads must not make that hundreds of megabytes.
const WIRE_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes one outbox read should bring, about (rows are counted from the
/// outbox's average row size).
const READ_BYTES: u64 = 2 * 1024 * 1024;

/// The upstream connection's next report, kept across `select!` turns.
type Next = ReusableBoxFuture<'static, (Box<Link>, Report)>;

/// The forwarder's inputs and outputs.
pub struct Forwarder<C: Upstream = Client> {
    pub cfg: Arc<UplinkConfig>,
    pub gateway: Arc<str>,
    pub client: C,
    pub pool: SqlitePool,
    pub writer: mpsc::Sender<WriteCmd>,
    pub progress: Progress,
    /// Messages to send live, not buffered (QoS 0, or QoS 1/2 whose commit failed).
    pub live: mpsc::Receiver<Publish>,
    /// Commands from upstream go to the local broker here.
    pub commands: Option<mpsc::Sender<Publish>>,
    /// MQTT 5 commands with request/response properties go here
    /// (`bridge/command_props.rs`), when the broker handle is at hand.
    pub command_props: Option<mpsc::Sender<super::command_props::WithProps>>,
    /// Commands published locally on forwarded topics must not come back.
    pub counters: Arc<Counters>,
    /// Set when the gateway stops: how long the flush may take (what is
    /// left of the bridge's stop budget); then say `offline`.
    pub flush: watch::Receiver<Option<Duration>>,
    /// The write-behind memory queue (`buffer.write_behind`), when on.
    pub behind: Option<Arc<Behind>>,
}

/// What the drain loop keeps across its turns beside the window's
/// [`State`]: the connection's next report, the outbox read in progress
/// and its pause, the log throttles, the queues still open.
struct Turns {
    conn: Next,
    /// The outbox read in progress, run beside the connection.
    reading: Option<Reading>,
    read_pause: ReadPause,
    read_log: LogThrottle,
    live_drops: LogThrottle,
    live_open: bool,
    status_topic: String,
}

/// Clones of the forwarder's queues, apart from [`Turns`]: a reserved
/// permit borrows them (not the forwarder) while an event is handled.
struct Queues {
    writer: mpsc::Sender<WriteCmd>,
    local: Option<mpsc::Sender<Publish>>,
}

impl<C: Upstream> Forwarder<C> {
    pub async fn run(mut self, link: Link) {
        let mut st = State::new(Cursor::new(self.cfg.buffer.drain));
        st.pace =
            (self.cfg.drain_rate).map(|rate| pace::Pace::new(rate, tokio::time::Instant::now()));
        let mut t = Turns {
            conn: ReusableBoxFuture::new(upstream::next(Box::new(link))),
            reading: None,
            read_pause: ReadPause::Clear,
            read_log: LogThrottle::new(Duration::from_secs(10)),
            live_drops: LogThrottle::new(Duration::from_secs(10)),
            live_open: true,
            status_topic: self.cfg.status_topic(&self.gateway),
        };
        let mut q = Queues {
            writer: self.writer.clone(),
            local: self.commands.clone(),
        };
        while !matches!(st.mode, Mode::Stopping { .. }) {
            let expired = self.next_event(&mut st, &mut t, &q).await;
            self.after_event(&mut st, &mut t, &mut q, expired);
        }
        self.stop(&mut st, &mut t.conn, &t.status_topic).await;
    }

    /// Waits for the next event and handles it; `true` when it was the
    /// flush deadline.
    async fn next_event(&mut self, st: &mut State, t: &mut Turns, q: &Queues) -> bool {
        let deleting = st.acks_sent > st.acks_done;
        let marking = st.marks_sent > st.marks_done;
        tokio::select! {
            (link, r) = t.conn.get_pin() => self.on_reports(link, r, st, t).await,
            rows = join(&mut t.reading), if t.reading.is_some() => self.on_read(rows, st, t),
            _ = t.read_pause.wait(), if t.reading.is_none() => {}
            _ = self.progress.committed.changed(), if st.cursor.caught_up => st.cursor.wake(),
            _ = self.progress.deleted.changed(), if deleting => {}
            _ = self.progress.released.changed(), if marking => {}
            permit = q.writer.reserve(), if !st.acks.is_empty() && !deleting => {
                if let Ok(p) = permit {
                    st.acks_sent += to_writer::hand(p, &mut st.acks, WriteCmd::Ack);
                }
            }
            // marks the writer had no room for: as soon as it has (the
            // PUBRELs wait for them, nothing else may wake the loop)
            permit = q.writer.reserve(), if !st.marks.is_empty() => {
                if let Ok(p) = permit {
                    st.marks_sent += to_writer::hand(p, &mut st.marks, WriteCmd::Release);
                }
            }
            permit = reserve(&q.local), if !st.commands.is_empty() => {
                if let Some(p) = permit {
                    self.command_handed_on(st, p);
                }
            }
            m = self.live.recv(), if t.live_open => match m {
                Some(p) => self.send_live(p, st, &mut t.live_drops),
                None => t.live_open = false,
            },
            flush = flush_asked(&mut self.flush), if matches!(st.mode, Mode::Live | Mode::Disconnected) => {
                self.on_shutdown(st, tokio::time::Instant::now() + flush);
            }
            _ = sleep_until(st.mode) => return true,
            // write-behind: messages in memory to send
            _ = behind_ready(&self.behind), if st.mode.connected() => {}
            // drain_rate: a token is due for the row held back
            _ = pace::ready(&st.pace), if st.mode.connected() => {}
        }
        false
    }

    /// A report of the upstream connection, and whatever else it has
    /// ready, so acks and window refills are handled in batches.
    async fn on_reports(&mut self, mut link: Box<Link>, r: Report, st: &mut State, t: &mut Turns) {
        self.on_report(&mut *link, r, st, &t.status_topic);
        t.conn.set(upstream::next(link));
        for _ in 0..EVENTS_PER_TURN {
            match std::future::poll_fn(|cx| Poll::Ready(t.conn.poll(cx))).await {
                Poll::Ready((mut link, r)) => {
                    self.on_report(&mut *link, r, st, &t.status_topic);
                    t.conn.set(upstream::next(link));
                }
                Poll::Pending => break,
            }
        }
    }

    /// A finished outbox read: its rows to the cursor, or a pause before
    /// the next read.
    fn on_read(&mut self, rows: Read, st: &mut State, t: &mut Turns) {
        let Some((_, fetch, started)) = t.reading.take() else {
            return;
        };
        match rows {
            Ok(rows) => {
                t.read_pause.ok();
                st.cursor.on_rows(fetch, rows);
                let ready = &st.cursor.ready;
                self.progress
                    .in_flight
                    .forget_gone(started, |id| ready.iter().any(|r| r.id == id));
            }
            Err(e) => {
                self.counters.io_errors.fetch_add(1, Relaxed);
                let wait = t.read_pause.failed();
                if let Some(suppressed) = t.read_log.ready() {
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                        suppressed_logs = suppressed, "uplink: cannot read the outbox");
                }
            }
        }
    }

    /// After every event: the writer's progress, what goes to the writer,
    /// and, while connected, the window refill and the next read; then the
    /// mode's next step.
    fn after_event(&mut self, st: &mut State, t: &mut Turns, q: &mut Queues, expired: bool) {
        if self.commands.is_none() {
            // the gateway stops: the local publish queue may close
            q.local = None;
        }
        st.acks_done = *self.progress.deleted.borrow_and_update();
        let marked = *self.progress.released.borrow_and_update();
        self.release_marked(st, marked);
        self.send_acks(st);
        self.send_marks(st);
        self.send_failures(st);
        self.send_command_acks(st);
        match st.mode {
            Mode::Live | Mode::Flushing { .. } => {
                self.send_behind(st);
                self.fill(st);
                if t.reading.is_none() && t.read_pause.is_clear() {
                    t.reading = self.read(st);
                }
            }
            Mode::Disconnected | Mode::Stopping { .. } => {}
        }
        self.after_turn(st, expired);
    }

    /// Says `offline` upstream (when connected), waits for its PUBACK
    /// briefly, disconnects, and hands the last acknowledgements to the
    /// writer.
    async fn stop(&mut self, st: &mut State, conn: &mut Next, status_topic: &str) {
        if let Mode::Stopping { connected: true } = st.mode {
            let offline = bytes::Bytes::from_static(b"offline");
            if self.send_other(
                st,
                status_topic.to_string(),
                QoS::AtLeastOnce,
                true,
                offline,
            ) {
                let deadline = tokio::time::Instant::now() + OFFLINE_WAIT;
                while st.mode == (Mode::Stopping { connected: true }) && st.unacked() > 0 {
                    match tokio::time::timeout_at(deadline, conn.get_pin()).await {
                        Ok((mut link, r)) => {
                            self.on_report(&mut *link, r, st, status_topic);
                            conn.set(upstream::next(link));
                        }
                        Err(_) => break,
                    }
                }
            }
            // acknowledgements already on their way still delete their
            // rows: read until the broker closes the connection
            let _ = self.client.disconnect();
            let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
            while let Ok((mut link, r)) = tokio::time::timeout_at(deadline, conn.get_pin()).await {
                if matches!(r, Report::Down) {
                    conn.set(upstream::next(link));
                    break;
                }
                self.on_report(&mut *link, r, st, status_topic);
                conn.set(upstream::next(link));
            }
        }
        let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
        for cmd in [
            WriteCmd::Ack(std::mem::take(&mut st.acks)),
            WriteCmd::Failed(std::mem::take(&mut st.failures)),
            WriteCmd::Release(std::mem::take(&mut st.marks)),
        ] {
            let empty = match &cmd {
                WriteCmd::Ack(a) => a.is_empty(),
                WriteCmd::Failed(f) => f.is_empty(),
                WriteCmd::Release(r) => r.is_empty(),
                WriteCmd::Insert { .. } => true,
            };
            if !empty
                && !matches!(
                    tokio::time::timeout_at(deadline, self.writer.send(cmd)).await,
                    Ok(Ok(()))
                )
            {
                warn!(
                    "uplink: outbox writer gone or stuck; acknowledged messages stay in the outbox (sent again after the restart)"
                );
            }
        }
        info!("uplink stopped");
    }
}

/// The outcome of the read in progress.
async fn join(reading: &mut Option<Reading>) -> Read {
    match reading {
        Some((task, ..)) => task
            .await
            .unwrap_or_else(|e| Err(outbox::OutboxError::Task(e.to_string()))),
        None => std::future::pending().await,
    }
}

/// Room in the local publish queue (never, without one).
async fn reserve(local: &Option<mpsc::Sender<Publish>>) -> Option<mpsc::Permit<'_, Publish>> {
    match local {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// Until the write-behind queue has messages to send (for ever without one).
async fn behind_ready(behind: &Option<Arc<Behind>>) {
    match behind {
        Some(b) => b.ready.notified().await,
        None => std::future::pending().await,
    }
}

/// Until the gateway stops: how long the flush may take (for ever if
/// the bridge is gone without a stop).
async fn flush_asked(flush: &mut watch::Receiver<Option<Duration>>) -> Duration {
    let asked = flush
        .wait_for(Option::is_some)
        .await
        .map(|d| d.unwrap_or_default());
    match asked {
        Ok(d) => d,
        Err(_) => std::future::pending().await,
    }
}

/// Until the flush deadline, in `Flushing`; for ever otherwise.
async fn sleep_until(mode: Mode) {
    match mode {
        Mode::Flushing { until } => tokio::time::sleep_until(until).await,
        _ => std::future::pending().await,
    }
}

mod behind;
mod commands;
mod pace;
mod pause;
mod props;
mod report;
mod server;
#[cfg(test)]
mod tests;
mod to_writer;
mod window;
