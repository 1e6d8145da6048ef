//! The outbox: the bridge's only durable state, a SQLite database
//! (`{data_dir}/outbox.db`, WAL, through sqlx with bundled SQLite).
//!
//! Schema:
//!
//! ```sql
//! CREATE TABLE outbox (
//!     id         INTEGER PRIMARY KEY AUTOINCREMENT, -- commit order; never reused
//!     topic      TEXT    NOT NULL,                  -- upstream topic (prefix applied)
//!     payload    BLOB    NOT NULL,
//!     qos        INTEGER NOT NULL,                  -- 1 or 2 (QoS 0 is never stored)
//!     retain     INTEGER NOT NULL,                  -- 0 or 1
//!     created_ms INTEGER NOT NULL,                  -- commit time, ms since the epoch (display only)
//!     size       INTEGER NOT NULL,                  -- bytes of topic + payload
//!     attempts   INTEGER NOT NULL DEFAULT 0,        -- failed tries upstream
//!     clock_ms   INTEGER NOT NULL DEFAULT 0,        -- commit time on the run clock (expire.rs)
//!     released   INTEGER NOT NULL DEFAULT 0,        -- QoS 2: PUBREC'd, only PUBREL left
//!     expiry_s   INTEGER NOT NULL DEFAULT 0,        -- MQTT 5 message expiry from created_ms (0: none)
//!     props      BLOB                               -- MQTT 5 request/response properties (props.rs)
//! );
//! ```
//!
//! and the dead-letter table `dead` (see `dead.rs`): messages the uplink
//! gave up on, kept until `fieldgate outbox retry-dead` puts them back.
//!
//! Guarantees:
//! - one writer task ([`Writer`]) owns every write. It takes whatever has
//!   queued while the previous commit ran (group commit: one transaction,
//!   one fsync, per batch), so throughput does not depend on fsync latency;
//! - the commit window (`buffer.commit_window`, [`Writer::gather`]): the
//!   gateway's own messages ([`Commit::Window`]), acknowledgements and
//!   release marks gather for up to the window after the first of them,
//!   so a commit's fixed cost (a 4 KiB WAL frame for every page it
//!   touches, whatever few bytes changed, and the fsync) is paid once per
//!   window, not once per device poll (docs/design.md, "Where the bytes
//!   go"). A local client's message ([`Commit::Now`]) ends the window at
//!   once (its PUBACK waits); so do a quarter of the uplink's in-flight
//!   window of acknowledgements when no insert waits (a drain), half of it
//!   beside inserts ([`Writer::with_flush_at`]), so a drain is not held
//!   back. Deletes ride in the commit of the inserts of the same window;
//! - a message is inserted before it is sent upstream and deleted only when
//!   the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2);
//! - `AUTOINCREMENT` keeps ids growing even when the table empties, so ids
//!   give the commit order and a cursor never misses a row;
//! - `synchronous = FULL` (the default, `buffer.synchronous`): a commit
//!   returns after the WAL is fsynced: a power loss loses nothing committed,
//!   only the batch being committed (whose senders were not yet told it
//!   was). `synchronous = NORMAL`: the WAL is fsynced at checkpoints only
//!   (about every 1000 pages, ~4 MB): a power loss can lose the commits
//!   since the last checkpoint; a process crash (SIGKILL) loses nothing
//!   committed in either mode;
//! - capacity (`max_messages`, `max_bytes`) is enforced in the commit that
//!   would exceed it: `drop_oldest` deletes the oldest rows, `drop_newest`
//!   refuses the incoming ones; `max_age` is enforced once a second on the
//!   run clock, which a step of the wall clock cannot move (`expire.rs`);
//!   every drop is counted. Rows in flight upstream ([`InFlight`]) are
//!   never dropped or expired, and a dropped row the uplink read ahead is
//!   not sent: a message counted as dropped must not arrive too (when every
//!   older row is in flight, the oldest row that is not is the incoming one);
//! - the depth and byte counts are exact: every delete returns the sizes
//!   of the rows it deleted (`RETURNING size`), so no path recounts the
//!   table (a full scan) except the start;
//! - a failed commit (SQLITE_BUSY, full disk, I/O error) is retried
//!   [`COMMIT_TRIES`] times with a growing pause (the callers wait: local
//!   clients get no PUBACK meanwhile), each failure logged and counted in
//!   `io_errors`; then its messages are handed to the uplink's live queue
//!   (forwarded if connected, else counted in `live_dropped`) and a
//!   waiting caller is told so: a local client's connection is then closed
//!   without PUBACK, so the client sends the message again. The writer
//!   keeps going;
//! - acknowledged ids are deleted in the next commit, runs of consecutive
//!   ids as one range delete; a commit of deletes only is sent to SQLite as
//!   one statement list (`BEGIN IMMEDIATE; DELETE ...; COMMIT`) and, under
//!   `synchronous = FULL`, is not fsynced on its own: a power loss can bring
//!   back rows deleted since the last fsync (the next commit with inserts,
//!   or a checkpoint), which are then sent again (duplicates, never a
//!   loss); a process crash cannot; the uplink counts an id against its window
//!   until the writer reports it handled ([`Progress::deleted`]).
//!
//! Must not talk to the network or the broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, Row as _};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use super::config::BufferConfig;
use crate::bridge::counters::Counters;
use crate::log_throttle::LogThrottle;
use crate::reading::Publish;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    clock_ms   INTEGER NOT NULL DEFAULT 0,
    released   INTEGER NOT NULL DEFAULT 0,
    expiry_s   INTEGER NOT NULL DEFAULT 0,
    props      BLOB
)";

/// Rows per multi-row INSERT statement.
const INSERT_CHUNK: usize = 64;
/// Most rows one commit takes (bounds the time a batch holds the write lock).
pub const MAX_BATCH: usize = 8192;
/// Acknowledgements and release marks that end a commit window, unless
/// the bridge sets it ([`Writer::with_flush_at`]).
const DEFAULT_FLUSH_AT: usize = 500;
/// Tries of a commit before its messages go to the live queue.
pub const COMMIT_TRIES: u32 = 4;
/// How often the file is shrunk and the dead letters pruned (`maintain.rs`).
const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How often `max_age` is enforced.
const EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open outbox {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot create outbox folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set aside the broken outbox {path}: {source}")]
    SetAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("outbox read task failed: {0}")]
    Task(String),
    #[error("outbox {op} failed: {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
}

fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> OutboxError {
    move |source| OutboxError::Query { op, source }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: u8,
    pub retain: bool,
    /// The forward entry's `message_expiry` in seconds (0: none).
    pub expiry_s: u32,
    /// A local client's MQTT 5 request/response properties, if any.
    pub props: Option<RowProps>,
}

impl NewMessage {
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    /// The message to send live when it cannot be stored.
    pub fn to_publish(&self) -> Publish {
        Publish {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: crate::reading::Qos::from_u8(self.qos).unwrap_or_default(),
            retain: self.retain,
        }
    }
}

/// Deletes every message; returns how many there were.
pub async fn purge(pool: &SqlitePool) -> Result<u64, OutboxError> {
    let r = sqlx::query("DELETE FROM outbox")
        .execute(pool)
        .await
        .map_err(q("purge"))?;
    Ok(r.rows_affected())
}

/// An acknowledged row: its id and its `size`, so the delete needs no
/// lookup of the sizes.
pub type Acked = (i64, u64);

/// When an insert is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// At once, with whatever queued: a local client waits for its PUBACK.
    Now,
    /// Within `buffer.commit_window`, with whatever gathers meanwhile.
    Window,
}

/// A request to the writer.
pub enum WriteCmd {
    /// Store these; `done` is told `true` once they are committed, `false`
    /// when the commit failed and they went to the live queue instead.
    /// (empty when all were committed).
    Insert {
        msgs: Vec<NewMessage>,
        done: Option<oneshot::Sender<bool>>,
        commit: Commit,
    },
    /// The broker acknowledged these rows: delete them.
    Ack(Vec<Acked>),
    /// Tries that failed: count them, or move the row to `dead`.
    Failed(Vec<dead::Failure>),
    /// The broker PUBREC'd these QoS 2 rows: mark them released (committed
    /// before their PUBREL is sent; see `upstream`'s module doc).
    Release(Vec<i64>),
}

impl WriteCmd {
    /// An insert committed at once, and the receiver of its answer.
    pub fn insert_now(msgs: Vec<NewMessage>) -> (WriteCmd, oneshot::Receiver<bool>) {
        let (done, answer) = oneshot::channel();
        let cmd = WriteCmd::Insert {
            msgs,
            done: Some(done),
            commit: Commit::Now,
        };
        (cmd, answer)
    }
}

/// What the writer tells the uplink.
pub struct Progress {
    /// The highest committed id.
    pub committed: watch::Receiver<i64>,
    /// How many acknowledged ids were handled (see [`WriteCmd::Ack`]).
    pub deleted: watch::Receiver<u64>,
    /// How many release marks were handled (see [`WriteCmd::Release`]).
    pub released: watch::Receiver<u64>,
    /// The rows in flight, shared with the writer.
    pub in_flight: InFlight,
}

/// The single writer: group commit of inserts and deletes.
pub struct Writer {
    conn: SqliteConnection,
    acct: Accounting,
    /// Acknowledgements and release marks that end a commit window.
    flush_at: usize,
}

/// The writer's view of the outbox size and its drop accounting.
struct Accounting {
    cfg: BufferConfig,
    counters: Arc<Counters>,
    /// The highest committed id, for the uplink.
    committed: watch::Sender<i64>,
    /// How many acknowledged ids the writer has handled (deleted, or given
    /// up on after a failed commit), for the uplink's window.
    deleted: watch::Sender<u64>,
    /// How many release marks the writer has handled, for the uplink.
    released: watch::Sender<u64>,
    /// Where messages of a failed commit go when nobody waits for them.
    live: Option<mpsc::Sender<Publish>>,
    messages: u64,
    bytes: u64,
    /// Rows the uplink has in flight (never dropped or expired).
    in_flight: InFlight,
    /// The run clock `max_age` is measured on (`expire.rs`).
    clock: expire::RunClock,
    /// When the oldest row was last looked up (for the age metric).
    last_oldest: Option<Instant>,
    drops_log: LogThrottle,
}

impl Writer {
    pub async fn new(
        mut conn: SqliteConnection,
        cfg: BufferConfig,
        counters: Arc<Counters>,
    ) -> Result<(Writer, Progress), OutboxError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(q("stats"))?;
        let messages = row.get::<i64, _>(0) as u64;
        let bytes = row.get::<i64, _>(1) as u64;
        let (tx, rx) = watch::channel(row.get::<i64, _>(2));
        let (deleted, deleted_rx) = watch::channel(0);
        let (released, released_rx) = watch::channel(0);
        counters.depth.store(messages, Relaxed);
        counters.depth_bytes.store(bytes, Relaxed);
        let clock = expire::RunClock::resume(&mut conn).await?;
        let in_flight = InFlight::default();
        let mut writer = Writer {
            flush_at: DEFAULT_FLUSH_AT,
            conn,
            acct: Accounting {
                cfg,
                counters,
                committed: tx,
                deleted,
                released,
                live: None,
                messages,
                bytes,
                in_flight: in_flight.clone(),
                clock,
                last_oldest: None,
                drops_log: LogThrottle::new(std::time::Duration::from_secs(10)),
            },
        };
        writer.acct.note_oldest(&mut writer.conn).await;
        Ok((
            writer,
            Progress {
                committed: rx,
                deleted: deleted_rx,
                released: released_rx,
                in_flight,
            },
        ))
    }

    /// Messages of a failed commit are handed to `live` (forwarded if the
    /// uplink is up) instead of lost.
    pub fn with_live(mut self, live: mpsc::Sender<Publish>) -> Writer {
        self.acct.live = Some(live);
        self
    }

    /// Runs until every sender of `rx` is gone, then closes the connection.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let mut batch = Vec::new();
        let mut expiry = tokio::time::interval(EXPIRY_EVERY);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
                _ = expiry.tick() => {
                    if let Err(e) = self.acct.expire(&mut self.conn).await {
                        self.acct.counters.io_errors.fetch_add(1, Relaxed);
                        warn!(error = %e, "outbox expiry failed; tried again in a second");
                    }
                    continue;
                }
                _ = maintain.tick() => {
                    self.acct.maintain(&mut self.conn).await;
                    continue;
                }
            };
            self.gather(first, &mut rx, &mut batch).await;
            self.acct.commit(&mut self.conn, &mut batch).await;
            batch.clear();
        }
        if let Err(e) = self.conn.close().await {
            warn!(error = %e, "closing the outbox");
        }
    }
}

mod commit;
pub mod dead;
mod delete;
mod expire;
mod gather;
mod health;
mod inflight;
mod maintain;
pub use inflight::InFlight;
mod open;
mod props;
pub use open::{Opened, db_path, open, open_or_set_aside};
pub use props::RowProps;
mod read;
pub use read::{Stats, Stored, fetch, stats};
#[cfg(test)]
pub(super) mod tests {
    use super::delete::runs;
    use super::*;
    use crate::bridge::config::Synchronous;
    use crate::config::ByteSize;

    /// A QoS 1 message whose payload is `i` (the bridge's tests share it).
    pub(in crate::bridge) fn m(i: usize) -> NewMessage {
        NewMessage {
            topic: "t".into(),
            payload: bytes::Bytes::from(format!("{i:09}")),
            qos: 1,
            retain: false,
            expiry_s: 0,
            props: None,
        }
    }

    /// A running writer on a fresh outbox in a temporary folder.
    pub(super) struct Running {
        pub dir: tempfile::TempDir,
        pub pool: SqlitePool,
        pub tx: mpsc::Sender<WriteCmd>,
        pub counters: Arc<Counters>,
        pub progress: Progress,
    }

    pub(super) async fn running(cfg: BufferConfig) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
        let counters = Arc::new(Counters::default());
        let (w, progress) = Writer::new(conn, cfg, counters.clone())
            .await
            .expect("writer");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(w.run(rx));
        Running {
            dir,
            pool,
            tx,
            counters,
            progress,
        }
    }

    async fn writer(
        cfg: BufferConfig,
    ) -> (
        tempfile::TempDir,
        SqlitePool,
        mpsc::Sender<WriteCmd>,
        Arc<Counters>,
    ) {
        let r = running(cfg).await;
        (r.dir, r.pool, r.tx, r.counters)
    }

    /// Stores `msgs`; `true` when they were committed.
    async fn insert(tx: &mpsc::Sender<WriteCmd>, msgs: Vec<NewMessage>) -> bool {
        let (done, wait) = oneshot::channel();
        tx.send(WriteCmd::Insert {
            msgs,
            done: Some(done),
            commit: Commit::Now,
        })
        .await
        .expect("send");
        wait.await.expect("reply")
    }

    #[test]
    fn acks_become_runs_and_singles() {
        assert_eq!(
            runs(&[7, 3, 4, 5, 9, 10, 12, 4]),
            (vec![(3, 5), (9, 10)], vec![7, 12])
        );
        assert_eq!(runs(&[]), (vec![], vec![]));
    }

    #[tokio::test]
    async fn acked_rows_are_deleted_and_ids_keep_growing() {
        let (_d, pool, tx, counters) = writer(BufferConfig::default()).await;
        assert!(insert(&tx, (0..10).map(m).collect()).await);
        let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
        assert_eq!(rows.len(), 10);
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let acked = rows.iter().map(|r| (r.id, r.size as u64)).collect();
        tx.send(WriteCmd::Ack(acked)).await.expect("ack");
        insert(&tx, vec![m(10)]).await;
        let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
        assert_eq!(rows.len(), 1);
        assert!(rows[0].id > ids[9], "ids are never reused");
        assert_eq!(counters.depth.load(Relaxed), 1);
        assert_eq!(stats(&pool).await.expect("stats").messages, 1);
    }

    #[tokio::test]
    async fn deletes_only_keep_the_counts_right_and_full_sync() {
        let (_d, pool, tx, counters) = writer(BufferConfig::default()).await;
        insert(&tx, (0..20).map(m).collect()).await;
        let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
        let acked = |rs: &[Stored]| rs.iter().map(|r| (r.id, r.size as u64)).collect();
        // a run, a lone id, and an id acknowledged twice
        let mut first: Vec<Acked> = acked(&rows[0..5]);
        first.push((rows[9].id, rows[9].size as u64));
        tx.send(WriteCmd::Ack(first)).await.expect("ack");
        tx.send(WriteCmd::Ack(acked(&rows[4..6])))
            .await
            .expect("ack");
        // the next insert waits for the deletes before it
        insert(&tx, vec![m(20)]).await;
        let s = stats(&pool).await.expect("stats");
        assert_eq!(s.messages, 20 - 7 + 1);
        assert_eq!(counters.depth.load(Relaxed), s.messages);
        assert_eq!(counters.depth_bytes.load(Relaxed), s.bytes);
    }

    #[tokio::test]
    async fn a_deletes_only_commit_leaves_synchronous_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
        let counters = Arc::new(Counters::default());
        let (mut w, _) = Writer::new(conn, BufferConfig::default(), counters)
            .await
            .expect("writer");
        let mut batch = vec![WriteCmd::Insert {
            msgs: (0..3).map(m).collect(),
            done: None,
            commit: Commit::Now,
        }];
        w.acct.commit(&mut w.conn, &mut batch).await;
        let rows = fetch(&pool, 0, i64::MAX, 10).await.expect("fetch");
        let acks: Vec<Acked> = rows.iter().map(|r| (r.id, r.size as u64)).collect();
        w.acct
            .delete_only(&mut w.conn, &acks)
            .await
            .expect("delete");
        assert_eq!(w.acct.messages, 0);
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut w.conn)
            .await
            .expect("pragma")
            .get(0);
        assert_eq!(sync, 2, "synchronous is FULL again");
    }

    #[tokio::test]
    async fn a_failed_commit_goes_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
        let counters = Arc::new(Counters::default());
        let (w, _) = Writer::new(conn, BufferConfig::default(), counters.clone())
            .await
            .expect("writer");
        let (live_tx, mut live_rx) = mpsc::channel(8);
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(w.with_live(live_tx).run(rx));
        // an I/O error stand-in: the table is gone under the writer
        sqlx::query("DROP TABLE outbox")
            .execute(&pool)
            .await
            .expect("drop");
        tx.send(WriteCmd::Insert {
            msgs: (0..2).map(m).collect(),
            done: None,
            commit: Commit::Now,
        })
        .await
        .expect("send");
        for i in 0..2 {
            let p = live_rx.recv().await.expect("sent live");
            assert_eq!(p.payload, m(i).payload);
        }
        // every try failed and was counted before the messages went live
        assert_eq!(counters.io_errors.load(Relaxed), COMMIT_TRIES as u64);
        // ... and the disk problem is there for /healthz until a commit succeeds
        let problem = counters.disk_problem.lock().expect("lock").clone();
        assert!(
            problem
                .as_deref()
                .is_some_and(|p| p.starts_with("outbox disk failing")),
            "{problem:?}"
        );
        sqlx::query(SCHEMA)
            .execute(&pool)
            .await
            .expect("table back");
        assert!(insert(&tx, vec![m(2)]).await);
        assert_eq!(*counters.disk_problem.lock().expect("lock"), None);
        drop(tx);
        task.await.expect("writer keeps going and ends cleanly");
    }

    #[tokio::test]
    async fn max_bytes_drop_oldest() {
        let cfg = BufferConfig {
            max_bytes: ByteSize(10 * 10), // ten rows of 1 + 9 bytes
            ..BufferConfig::default()
        };
        let (_d, pool, tx, counters) = writer(cfg).await;
        insert(&tx, (0..25).map(m).collect()).await;
        let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
        let kept: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        assert_eq!(kept.first().map(String::as_str), Some("000000015"));
        assert_eq!(kept.len(), 10);
        assert_eq!(counters.dropped_oldest.load(Relaxed), 15);
        assert_eq!(counters.depth_bytes.load(Relaxed), 100);
    }
}
