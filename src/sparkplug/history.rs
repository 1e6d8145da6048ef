//! The node's history: DDATA produced while the primary host is offline,
//! kept in `{data_dir}/sparkplug.db` (SQLite, WAL) in the order produced;
//! a row is deleted only once it was published.
//!
//! Group commit (`sparkplug.history_commit_window`, as the outbox's
//! `commit_window`): the DDATA of one window gather in memory and go into
//! the file in one transaction, so an outage at 10 devices × 10 polls a
//! second writes a few commits a second to the SD card instead of 100. A
//! SIGKILL or power cut loses at most the window's DDATA (nobody had
//! acknowledged them: the same trade as the outbox's own messages); `0s`
//! commits each at once. At most [`MAX_PENDING`] wait, whatever the window.
//!
//! Bounded: past `sparkplug.history_max_rows` rows the oldest are deleted
//! (drop oldest, counted in `fieldgate_sparkplug_history_total{what=
//! "dropped"}` by the task, logged).
//!
//! Owns that file, its schema, and what happens to a broken one (set aside
//! as `sparkplug.db.corrupt-<secs>`, a fresh one opened, logged). Must not
//! know topics, seq or pacing: the node and the task do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use sqlx::Connection;
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tracing::warn;

use super::SparkplugError;
use super::payload::Payload;

/// The history file under `data_dir`.
pub const FILE: &str = "sparkplug.db";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    payload BLOB NOT NULL
)";

/// One stored DDATA.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: i64,
    pub device: String,
    pub payload: Payload,
}

/// DDATA waiting for the commit at most, whatever the window.
pub const MAX_PENDING: usize = 1000;

/// The open history file.
pub struct History {
    conn: SqliteConnection,
    path: PathBuf,
    /// Rows in the file (counted at open, kept up to date).
    rows: u64,
    max_rows: u64,
    /// DDATA not in the file yet, in the order produced: (device, bytes).
    pending: Vec<(String, Vec<u8>)>,
    /// How long the first pending DDATA waits for others.
    window: Duration,
    /// When the pending DDATA are committed.
    due: Option<Instant>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// DDATA now in the file.
    pub stored: u64,
    /// The oldest rows deleted to stay within `history_max_rows`.
    pub dropped: u64,
}

/// A commit that failed: how many DDATA it lost, and why.
#[derive(Debug)]
pub struct Lost {
    pub rows: u64,
    pub error: SparkplugError,
}

async fn connect(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    sqlx::query(SCHEMA).execute(&mut conn).await?;
    sqlx::query("SELECT count(*) FROM history")
        .fetch_one(&mut conn)
        .await?;
    Ok(conn)
}

fn db_error(path: &Path) -> impl Fn(sqlx::Error) -> SparkplugError + '_ {
    move |source| SparkplugError::History {
        path: path.to_path_buf(),
        source,
    }
}

impl History {
    /// Opens (creating) the history in `data_dir`; a file that is not a
    /// database of this schema is set aside and a new one opened.
    /// `window`: the group commit's (`sparkplug.history_commit_window`).
    pub async fn open(
        data_dir: &Path,
        max_rows: u64,
        window: Duration,
    ) -> Result<History, SparkplugError> {
        let path = data_dir.join(FILE);
        let conn = match connect(&path).await {
            Ok(c) => c,
            Err(sqlx::Error::Database(e)) if is_broken(e.message()) => {
                match crate::data_dir::set_aside(&path) {
                    Ok(to) => {
                        warn!(file = %path.display(), set_aside = %to.display(), error = %e, "Sparkplug history file is broken; set aside, starting empty")
                    }
                    Err((f, io)) => {
                        warn!(file = %f.display(), error = %io, "Sparkplug history file is broken and could not be set aside")
                    }
                }
                connect(&path).await.map_err(db_error(&path))?
            }
            Err(e) => return Err(db_error(&path)(e)),
        };
        let mut h = History {
            conn,
            path,
            rows: 0,
            max_rows: max_rows.max(1),
            pending: Vec::new(),
            window,
            due: None,
        };
        h.rows = h.count().await?;
        Ok(h)
    }

    /// Adds one DDATA of `device`: committed now when the window is zero
    /// or [`MAX_PENDING`] are waiting (what the commit did), else at
    /// [`History::due`] (`None`).
    pub async fn add(
        &mut self,
        device: &str,
        payload: &Payload,
    ) -> Result<Option<Committed>, Lost> {
        self.pending
            .push((device.to_string(), payload.encode_to_vec()));
        if self.window.is_zero() || self.pending.len() >= MAX_PENDING {
            return self.commit().await.map(Some);
        }
        self.due.get_or_insert_with(|| Instant::now() + self.window);
        Ok(None)
    }

    /// When the DDATA waiting now are to be committed.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Commits the DDATA waiting, in one transaction, then deletes the
    /// oldest rows past the bound.
    pub async fn commit(&mut self) -> Result<Committed, Lost> {
        self.due = None;
        let rows = std::mem::take(&mut self.pending);
        let stored = rows.len() as u64;
        if rows.is_empty() {
            return Ok(Committed {
                stored: 0,
                dropped: 0,
            });
        }
        match self.insert(&rows).await {
            Ok(dropped) => Ok(Committed { stored, dropped }),
            Err(error) => Err(Lost {
                rows: stored,
                error,
            }),
        }
    }

    /// Inserts `rows` and trims to the bound, in one transaction; returns
    /// how many of the oldest rows were deleted.
    async fn insert(&mut self, rows: &[(String, Vec<u8>)]) -> Result<u64, SparkplugError> {
        let fail = db_error(&self.path);
        let mut tx = self.conn.begin().await.map_err(&fail)?;
        for (device, bytes) in rows {
            sqlx::query("INSERT INTO history (device, payload) VALUES (?, ?)")
                .bind(device)
                .bind(bytes)
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
        }
        let total = self.rows + rows.len() as u64;
        let excess = total.saturating_sub(self.max_rows);
        let mut dropped = 0;
        if excess > 0 {
            dropped = sqlx::query(
                "DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id LIMIT ?)",
            )
            .bind(i64::try_from(excess).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(&fail)?
            .rows_affected();
        }
        tx.commit().await.map_err(&fail)?;
        self.rows = total - dropped;
        Ok(dropped)
    }

    /// The oldest `n` rows after row `after` (0: from the first), in the
    /// order stored. A row whose payload does not decode is deleted and
    /// logged.
    pub async fn oldest(&mut self, after: i64, n: u32) -> Result<Vec<Stored>, SparkplugError> {
        let rows =
            sqlx::query("SELECT id, device, payload FROM history WHERE id > ? ORDER BY id LIMIT ?")
                .bind(after)
                .bind(i64::from(n))
                .fetch_all(&mut self.conn)
                .await
                .map_err(db_error(&self.path))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(2);
            match Payload::decode(bytes.as_slice()) {
                Ok(payload) => out.push(Stored {
                    id,
                    device: r.get(1),
                    payload,
                }),
                Err(e) => {
                    warn!(id, error = %e, "stored Sparkplug DDATA does not decode; deleted");
                    self.delete(id, id).await?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the rows `first..=last` (they were published, or acknowledged).
    pub async fn delete(&mut self, first: i64, last: i64) -> Result<(), SparkplugError> {
        let done = sqlx::query("DELETE FROM history WHERE id >= ? AND id <= ?")
            .bind(first)
            .bind(last)
            .execute(&mut self.conn)
            .await
            .map_err(db_error(&self.path))?
            .rows_affected();
        self.rows = self.rows.saturating_sub(done);
        Ok(())
    }

    /// Rows stored now.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    async fn count(&mut self) -> Result<u64, SparkplugError> {
        let n: i64 = sqlx::query("SELECT count(*) FROM history")
            .fetch_one(&mut self.conn)
            .await
            .map_err(db_error(&self.path))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn is_broken(message: &str) -> bool {
    message.contains("not a database")
        || message.contains("malformed")
        || message.contains("corrupt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::payload::Metric;

    fn ddata(ts: u64) -> Payload {
        Payload {
            timestamp: Some(ts),
            metrics: vec![Metric {
                alias: Some(2),
                timestamp: Some(ts),
                ..Metric::default()
            }],
            ..Payload::default()
        }
    }

    /// The payloads in the file, oldest first (up to 10).
    async fn payloads(h: &mut History) -> Vec<Payload> {
        let rows = h.oldest(0, 10).await.unwrap();
        rows.into_iter().map(|r| r.payload).collect()
    }

    #[tokio::test]
    async fn rows_come_back_in_order_across_a_reopen_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 100, Duration::ZERO)
            .await
            .unwrap();
        for ts in 1..=3 {
            h.add("plc", &ddata(ts)).await.unwrap();
        }
        drop(h);
        let mut h = History::open(dir.path(), 100, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(h.rows(), 3);
        let rows = h.oldest(0, 2).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].payload, ddata(1));
        assert_eq!(h.oldest(rows[0].id, 1).await.unwrap()[0].payload, ddata(2));
        h.delete(rows[0].id, rows[1].id).await.unwrap();
        let rest = h.oldest(0, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].payload, ddata(3));
        assert_eq!(h.rows(), 1);
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 3, Duration::ZERO).await.unwrap();
        let mut dropped = 0;
        for ts in 1..=5 {
            dropped += h.add("plc", &ddata(ts)).await.unwrap().unwrap().dropped;
        }
        assert_eq!((dropped, h.rows()), (2, 3));
        assert_eq!(payloads(&mut h).await, vec![ddata(3), ddata(4), ddata(5)]);
    }

    #[tokio::test]
    async fn a_broken_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
        let h = History::open(dir.path(), 100, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(h.rows(), 0);
    }

    /// Within the window DDATA wait in memory (the file holds none, as a
    /// second reader sees), then go in one commit in the order produced,
    /// the bound applied to the whole; MAX_PENDING commits at once.
    #[tokio::test]
    async fn a_window_gathers_ddata_into_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let window = Duration::from_secs(3600);
        let mut h = History::open(dir.path(), 4, window).await.unwrap();
        let before = Instant::now();
        for ts in 1..=6 {
            assert_eq!(h.add("plc", &ddata(ts)).await.unwrap(), None);
        }
        let due = h.due().expect("a commit is due");
        assert!(due >= before + window && due <= Instant::now() + window);
        let mut reader = History::open(dir.path(), 4, Duration::ZERO).await.unwrap();
        assert_eq!(reader.oldest(0, 10).await.unwrap(), vec![]);
        let done = h.commit().await.unwrap();
        assert_eq!(
            done,
            Committed {
                stored: 6,
                dropped: 2
            }
        );
        assert_eq!((h.rows(), h.due()), (4, None));
        assert_eq!(
            payloads(&mut reader).await,
            (3..=6).map(ddata).collect::<Vec<_>>()
        );

        let mut full = History::open(dir.path(), 10_000, window).await.unwrap();
        for ts in 1..MAX_PENDING as u64 {
            assert_eq!(full.add("plc", &ddata(ts)).await.unwrap(), None);
        }
        let done = full.add("plc", &ddata(0)).await.unwrap();
        assert_eq!(
            done,
            Some(Committed {
                stored: MAX_PENDING as u64,
                dropped: 0
            })
        );
        assert_eq!(full.due(), None);
    }
}
