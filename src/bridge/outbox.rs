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
//!     created_ms INTEGER NOT NULL,                  -- commit time, ms since the epoch
//!     size       INTEGER NOT NULL                   -- bytes of topic + payload
//! );
//! ```
//!
//! Guarantees:
//! - one writer task ([`Writer`]) owns every write. It takes whatever has
//!   queued while the previous commit ran (group commit: one transaction,
//!   one fsync, per batch), so throughput does not depend on fsync latency;
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
//! - capacity (`max_messages`, `max_bytes`, `max_age`) is enforced in the
//!   commit that would exceed it: `drop_oldest` deletes the oldest rows,
//!   `drop_newest` refuses the incoming ones; every drop is counted;
//! - a failed commit (full disk, I/O error) is logged and counted; its
//!   messages are handed back to the caller, or, when nobody waits for
//!   them, to the uplink's live queue (forwarded if connected, else counted
//!   as dropped); the writer keeps going;
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row as _};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::config::{BufferConfig, Synchronous, WhenFull};
use super::{Counters, RateLimited};
use crate::reading::{Publish, now_ms};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL
)";

/// Rows per multi-row INSERT statement.
const INSERT_CHUNK: usize = 64;
/// Most rows one commit takes (bounds the time a batch holds the write lock).
pub const MAX_BATCH: usize = 8192;

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
}

impl NewMessage {
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: u8,
    pub retain: bool,
    pub created_ms: i64,
    pub size: i64,
}

/// Depth, bytes and age of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
}

fn options(path: &Path, sync: Synchronous) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match sync {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(std::time::Duration::from_secs(5))
        .pragma("cache_size", "-2000")
        // a whole read-ahead crosses from SQLite's thread without the two
        // threads waking each other every 50 rows (sqlx's default)
        .row_buffer_size(1024)
}

/// The outbox file in `data_dir`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox.db")
}

/// Opens (creating if needed) the outbox: a read pool, and the single
/// write connection for [`Writer`].
pub async fn open(
    data_dir: &Path,
    sync: Synchronous,
) -> Result<(SqlitePool, SqliteConnection), OutboxError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OutboxError::Folder {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = db_path(data_dir);
    let opts = options(&path, sync);
    let open_err = |source| OutboxError::Open {
        path: path.clone(),
        source,
    };
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .map_err(open_err)?;
    sqlx::query(SCHEMA)
        .execute(&mut conn)
        .await
        .map_err(open_err)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts.clone())
        .await
        .map_err(open_err)?;
    Ok((pool, conn))
}

pub async fn stats(pool: &SqlitePool) -> Result<Stats, OutboxError> {
    let row = sqlx::query("SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created_ms) FROM outbox")
        .fetch_one(pool)
        .await
        .map_err(q("stats"))?;
    Ok(Stats {
        messages: row.get::<i64, _>(0) as u64,
        bytes: row.get::<i64, _>(1) as u64,
        oldest_ms: row.get::<Option<i64>, _>(2),
    })
}

fn stored(r: sqlx::sqlite::SqliteRow) -> Stored {
    Stored {
        id: r.get(0),
        topic: r.get(1),
        payload: bytes::Bytes::from(r.get::<Vec<u8>, _>(2)),
        qos: r.get::<i64, _>(3) as u8,
        retain: r.get::<i64, _>(4) != 0,
        created_ms: r.get(5),
        size: r.get(6),
    }
}

/// Up to `limit` messages with `lo <= id < hi`, in id order.
pub async fn fetch<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    lo: i64,
    hi: i64,
    limit: usize,
) -> Result<Vec<Stored>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, topic, payload, qos, retain, created_ms, size FROM outbox \
         WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
    )
    .bind(lo)
    .bind(hi)
    .bind(limit as i64)
    .fetch_all(ex)
    .await
    .map_err(q("read"))?;
    Ok(rows.into_iter().map(stored).collect())
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

/// A request to the writer.
pub enum WriteCmd {
    /// Store these; `done` gets back the messages that could not be stored
    /// (empty when all were committed).
    Insert {
        msgs: Vec<NewMessage>,
        done: Option<oneshot::Sender<Vec<NewMessage>>>,
    },
    /// The broker acknowledged these rows: delete them.
    Ack(Vec<Acked>),
}

/// What the writer tells the uplink.
pub struct Progress {
    /// The highest committed id.
    pub committed: watch::Receiver<i64>,
    /// How many acknowledged ids were handled (see [`WriteCmd::Ack`]).
    pub deleted: watch::Receiver<u64>,
}

/// The single writer: group commit of inserts and deletes.
pub struct Writer {
    conn: SqliteConnection,
    acct: Accounting,
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
    /// Where messages of a failed commit go when nobody waits for them.
    live: Option<mpsc::Sender<Publish>>,
    messages: u64,
    bytes: u64,
    last_expiry: Instant,
    /// When the oldest row was last looked up (for the age metric).
    last_oldest: Option<Instant>,
    drops_log: RateLimited,
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
        counters.depth.store(messages, Relaxed);
        counters.depth_bytes.store(bytes, Relaxed);
        let mut writer = Writer {
            conn,
            acct: Accounting {
                cfg,
                counters,
                committed: tx,
                deleted,
                live: None,
                messages,
                bytes,
                last_expiry: Instant::now() - std::time::Duration::from_secs(60),
                last_oldest: None,
                drops_log: RateLimited::new(std::time::Duration::from_secs(10)),
            },
        };
        writer.acct.note_oldest(&mut writer.conn).await;
        Ok((
            writer,
            Progress {
                committed: rx,
                deleted: deleted_rx,
            },
        ))
    }

    /// Messages of a failed commit that nobody waits for (`done: None`)
    /// are handed to `live` (forwarded if the uplink is up) instead of lost.
    pub fn with_live(mut self, live: mpsc::Sender<Publish>) -> Writer {
        self.acct.live = Some(live);
        self
    }

    /// Runs until every sender of `rx` is gone, then closes the connection.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let mut rows = 0;
            while rows < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if let WriteCmd::Insert { msgs, .. } = &cmd {
                            rows += msgs.len();
                        }
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.acct.commit(&mut self.conn, &mut batch).await;
            batch.clear();
        }
        if let Err(e) = self.conn.close().await {
            warn!(error = %e, "closing the outbox");
        }
    }
}

impl Accounting {
    async fn commit(&mut self, conn: &mut SqliteConnection, batch: &mut Vec<WriteCmd>) {
        let mut acks = Vec::new();
        let mut inserts = Vec::new();
        let mut waiters = Vec::new();
        let mut refused = 0u64;
        let (before_m, before_b) = (self.messages, self.bytes);
        for cmd in batch.drain(..) {
            match cmd {
                WriteCmd::Ack(ids) => acks.extend(ids),
                WriteCmd::Insert { msgs, done } => {
                    let start = inserts.len();
                    for m in msgs {
                        if self.admit(&m) {
                            inserts.push(m);
                        } else {
                            refused += 1;
                        }
                    }
                    waiters.push((start, inserts.len(), done));
                }
            }
        }
        if refused > 0 {
            self.counters.dropped_newest.fetch_add(refused, Relaxed);
            self.log_drop("drop_newest", refused as usize);
        }
        if inserts.is_empty() && waiters.is_empty() && !self.expiry_due() {
            // deletes only (the drain): one statement list, one round trip
            if let Err(e) = self.delete_only(conn, &acks).await {
                self.counters.io_errors.fetch_add(1, Relaxed);
                error!(error = %e, acks = acks.len(),
                    "outbox delete failed; these messages will be sent again after a restart");
            }
            self.after_commit(conn, acks.len(), before_m).await;
            return;
        }
        match self.transaction(conn, &acks, &inserts).await {
            Ok(Some(last_id)) => {
                self.committed.send_replace(last_id);
                for (_, _, done) in waiters {
                    if let Some(d) = done {
                        let _ = d.send(Vec::new());
                    }
                }
            }
            Ok(None) => {
                for (_, _, done) in waiters {
                    if let Some(d) = done {
                        let _ = d.send(Vec::new());
                    }
                }
            }
            Err(e) => {
                // the transaction rolled back: undo the counts it made
                self.messages = before_m;
                self.bytes = before_b;
                self.counters.io_errors.fetch_add(1, Relaxed);
                error!(error = %e, messages = inserts.len(), acks = acks.len(),
                    "outbox commit failed; messages go live only");
                for (start, end, done) in waiters {
                    match done {
                        Some(d) => {
                            let _ = d.send(inserts[start..end].to_vec());
                        }
                        None => self.go_live(&inserts[start..end]),
                    }
                }
            }
        }
        self.after_commit(conn, acks.len(), before_m).await;
    }

    async fn after_commit(&mut self, conn: &mut SqliteConnection, acks: usize, before_m: u64) {
        if acks > 0 {
            // handled either way: a failed delete leaves the rows to be sent
            // again after a restart (duplicates), it must not stall the window
            self.deleted.send_modify(|d| *d += acks as u64);
        }
        self.counters.depth.store(self.messages, Relaxed);
        self.counters.depth_bytes.store(self.bytes, Relaxed);
        if self.messages != before_m || acks > 0 {
            self.note_oldest(conn).await;
        }
    }

    fn expiry_due(&self) -> bool {
        self.last_expiry.elapsed() >= std::time::Duration::from_secs(1)
    }

    /// Deletes acknowledged rows in a transaction of its own, sent to
    /// SQLite as one statement list. With `synchronous: full` this commit
    /// runs with `synchronous = NORMAL` (no fsync of its own): a power loss
    /// can only bring deleted rows back (sent again: duplicates), never
    /// lose one; the next commit with inserts, or the next checkpoint,
    /// fsyncs it along.
    async fn delete_only(
        &mut self,
        conn: &mut SqliteConnection,
        acks: &[Acked],
    ) -> Result<(), OutboxError> {
        // rows_affected of a list that holds BEGIN/COMMIT counts the last
        // DELETE twice (SQLite's changes() outlives it): count by total_changes()
        let (relax, restore) = match self.cfg.synchronous {
            Synchronous::Full => ("PRAGMA synchronous=NORMAL;", "PRAGMA synchronous=FULL;"),
            Synchronous::Normal => ("", ""),
        };
        let sql = format!(
            "{relax}SELECT total_changes();BEGIN IMMEDIATE;{}SELECT total_changes();COMMIT;{restore}",
            delete_sql(acks)
        );
        match sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => {
                let total = |i: usize| rows.get(i).map_or(0, |r| r.get::<i64, _>(0));
                let deleted = (total(1) - total(0)).max(0) as u64;
                self.forget_acked(conn, acks, deleted).await
            }
            Err(source) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                if !restore.is_empty()
                    && let Err(e) = sqlx::raw_sql(restore).execute(&mut *conn).await
                {
                    error!(error = %e, "outbox: cannot restore synchronous=FULL");
                }
                Err(OutboxError::Query {
                    op: "delete",
                    source,
                })
            }
        }
    }

    /// Takes `deleted` acknowledged rows off the counts: their known sizes
    /// when every one was still there, else (a row was dropped or expired
    /// meanwhile, or acknowledged twice) a recount.
    async fn forget_acked(
        &mut self,
        conn: &mut SqliteConnection,
        acks: &[Acked],
        deleted: u64,
    ) -> Result<(), OutboxError> {
        let mut acks = acks.to_vec();
        acks.sort_unstable();
        acks.dedup_by_key(|a| a.0);
        if deleted == acks.len() as u64 {
            self.messages = self.messages.saturating_sub(deleted);
            let bytes: u64 = acks.iter().map(|a| a.1).sum();
            self.bytes = self.bytes.saturating_sub(bytes);
            return Ok(());
        }
        let row = sqlx::query("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox")
            .fetch_one(&mut *conn)
            .await
            .map_err(q("count"))?;
        self.messages = row.get::<i64, _>(0) as u64;
        self.bytes = row.get::<i64, _>(1) as u64;
        Ok(())
    }

    fn go_live(&self, msgs: &[NewMessage]) {
        let Some(live) = &self.live else { return };
        for m in msgs {
            let p = Publish {
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: crate::reading::Qos::from_u8(m.qos).unwrap_or_default(),
                retain: m.retain,
            };
            if live.try_send(p).is_err() {
                self.counters.live_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records the commit time of the oldest row (a primary-key lookup) for
    /// the oldest-age metric; 0 when the outbox is empty. Looked up at most
    /// once a second while rows come and go (a scrape is much rarer).
    async fn note_oldest(&mut self, conn: &mut SqliteConnection) {
        let known = self.counters.oldest_ms.load(Relaxed) != 0;
        if self.messages > 0
            && known
            && self
                .last_oldest
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.last_oldest = Some(Instant::now());
        let oldest = if self.messages == 0 {
            Ok(None)
        } else {
            sqlx::query("SELECT created_ms FROM outbox ORDER BY id LIMIT 1")
                .fetch_optional(&mut *conn)
                .await
                .map(|row| row.map(|r| r.get::<i64, _>(0)))
        };
        match oldest {
            Ok(ms) => self.counters.oldest_ms.store(ms.unwrap_or(0), Relaxed),
            Err(e) => debug!(error = %e, "cannot read the oldest outbox row"),
        }
    }

    /// Counts `m` in, or refuses it under `drop_newest` when it does not fit.
    fn admit(&mut self, m: &NewMessage) -> bool {
        if self.cfg.when_full == WhenFull::DropNewest
            && (self.messages >= self.cfg.max_messages
                || self.bytes + m.size() > self.cfg.max_bytes.bytes())
        {
            return false;
        }
        self.messages += 1;
        self.bytes += m.size();
        true
    }

    /// One transaction: acked deletes, expiry, inserts, `drop_oldest`.
    /// Returns the last inserted id, if any.
    async fn transaction(
        &mut self,
        conn: &mut SqliteConnection,
        acks: &[Acked],
        inserts: &[NewMessage],
    ) -> Result<Option<i64>, OutboxError> {
        let mut tx = conn.begin().await.map_err(q("begin"))?;
        if !acks.is_empty() {
            let r = sqlx::raw_sql(AssertSqlSafe(delete_sql(acks)))
                .execute(&mut *tx)
                .await
                .map_err(q("delete"))?;
            self.forget_acked(&mut tx, acks, r.rows_affected()).await?;
        }
        if self.expiry_due() {
            self.last_expiry = Instant::now();
            let cutoff = now_ms() - self.cfg.max_age.get().as_millis() as i64;
            loop {
                let rows = sqlx::query(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 1000) \
                     AND created_ms < ?1 RETURNING size",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(q("expire"))?;
                self.forget(&rows);
                if !rows.is_empty() {
                    self.counters.expired.fetch_add(rows.len() as u64, Relaxed);
                    self.log_drop("expired", rows.len());
                }
                if rows.len() < 1000 {
                    break;
                }
            }
        }
        let now = now_ms();
        let mut last = None;
        for chunk in inserts.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size) VALUES {}",
                vec!["(?,?,?,?,?,?)"; chunk.len()].join(",")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for m in chunk {
                query = query
                    .bind(m.topic.as_str())
                    .bind(m.payload.as_ref())
                    .bind(m.qos as i64)
                    .bind(m.retain as i64)
                    .bind(now)
                    .bind(m.size() as i64);
            }
            let r = query.execute(&mut *tx).await.map_err(q("insert"))?;
            last = Some(r.last_insert_rowid());
        }
        if self.cfg.when_full == WhenFull::DropOldest {
            self.drop_oldest(&mut tx).await?;
        }
        tx.commit().await.map_err(q("commit"))?;
        self.counters
            .committed
            .fetch_add(inserts.len() as u64, Relaxed);
        Ok(last)
    }

    async fn drop_oldest(&mut self, tx: &mut SqliteConnection) -> Result<(), OutboxError> {
        let mut dropped = 0usize;
        while self.messages > self.cfg.max_messages || self.bytes > self.cfg.max_bytes.bytes() {
            let over = self.messages.saturating_sub(self.cfg.max_messages).max(1);
            let n = over.min(1000) as i64;
            let rows = sqlx::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1) \
                 RETURNING size",
            )
            .bind(n)
            .fetch_all(&mut *tx)
            .await
            .map_err(q("drop_oldest"))?;
            if rows.is_empty() {
                break;
            }
            self.forget(&rows);
            dropped += rows.len();
        }
        if dropped > 0 {
            self.counters
                .dropped_oldest
                .fetch_add(dropped as u64, Relaxed);
            self.log_drop("drop_oldest", dropped);
        }
        Ok(())
    }

    fn forget(&mut self, rows: &[sqlx::sqlite::SqliteRow]) {
        for r in rows {
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(r.get::<i64, _>(0) as u64);
        }
    }

    fn log_drop(&mut self, policy: &'static str, n: usize) {
        if let Some(suppressed) = self.drops_log.ready() {
            warn!(
                policy,
                dropped = n,
                suppressed_logs = suppressed,
                depth = self.messages,
                bytes = self.bytes,
                "outbox full or expired: messages dropped (counted in the bridge counters)"
            );
        }
    }
}

/// The DELETE statements for acknowledged rows: a range delete per run of
/// consecutive ids, `IN` lists for the others. The ids are integers written
/// by `format!`, nothing from outside.
fn delete_sql(acks: &[Acked]) -> String {
    use std::fmt::Write;
    let ids: Vec<i64> = acks.iter().map(|a| a.0).collect();
    let (runs, singles) = runs(&ids);
    let mut sql = String::new();
    for (lo, hi) in runs {
        let _ = write!(sql, "DELETE FROM outbox WHERE id BETWEEN {lo} AND {hi};");
    }
    for chunk in singles.chunks(500) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let _ = write!(sql, "DELETE FROM outbox WHERE id IN ({});", list.join(","));
    }
    sql
}

/// Acknowledged ids as runs of consecutive ids `[lo, hi]` (one range
/// delete each) and the ids that stand alone.
fn runs(acks: &[i64]) -> (Vec<(i64, i64)>, Vec<i64>) {
    let mut ids = acks.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let (mut runs, mut singles) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        if j > i {
            runs.push((ids[i], ids[j]));
        } else {
            singles.push(ids[i]);
        }
        i = j + 1;
    }
    (runs, singles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn m(i: usize) -> NewMessage {
        NewMessage {
            topic: "t".into(),
            payload: bytes::Bytes::from(format!("{i:09}")),
            qos: 1,
            retain: false,
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
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
        let counters = Arc::new(Counters::default());
        let (w, _) = Writer::new(conn, cfg, counters.clone())
            .await
            .expect("writer");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(w.run(rx));
        (dir, pool, tx, counters)
    }

    async fn insert(tx: &mpsc::Sender<WriteCmd>, msgs: Vec<NewMessage>) -> Vec<NewMessage> {
        let (done, wait) = oneshot::channel();
        tx.send(WriteCmd::Insert {
            msgs,
            done: Some(done),
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
        assert!(insert(&tx, (0..10).map(m).collect()).await.is_empty());
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
