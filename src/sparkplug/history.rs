//! The node's history: DDATA produced while the primary host is offline,
//! kept in `{data_dir}/sparkplug.db` (SQLite, WAL) in the order produced,
//! each row committed before the next reading is taken, so a SIGKILL
//! loses nothing stored; a row is deleted only once it was published.
//!
//! Bounded: past `sparkplug.history_max_rows` rows the oldest are deleted
//! (drop oldest, counted in `fieldgate_sparkplug_history_total{what=
//! "dropped"}` by the task, logged).
//!
//! Owns that file, its schema, and what happens to a broken one (set aside
//! as `sparkplug.db.corrupt-<secs>`, a fresh one opened, logged). Must not
//! know topics, seq or pacing: the node and the task do.

use std::path::{Path, PathBuf};

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

/// The open history file.
pub struct History {
    conn: SqliteConnection,
    path: PathBuf,
    /// Rows in the file (counted at open, kept up to date).
    rows: u64,
    max_rows: u64,
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
    pub async fn open(data_dir: &Path, max_rows: u64) -> Result<History, SparkplugError> {
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
        };
        h.rows = h.count().await?;
        Ok(h)
    }

    /// Stores one DDATA of `device` (committed when this returns). Returns
    /// how many of the oldest rows were deleted to stay within the bound.
    pub async fn push(&mut self, device: &str, payload: &Payload) -> Result<u64, SparkplugError> {
        sqlx::query("INSERT INTO history (device, payload) VALUES (?, ?)")
            .bind(device)
            .bind(payload.encode_to_vec())
            .execute(&mut self.conn)
            .await
            .map_err(db_error(&self.path))?;
        self.rows += 1;
        if self.rows <= self.max_rows {
            return Ok(0);
        }
        let excess = self.rows - self.max_rows;
        let done = sqlx::query(
            "DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id LIMIT ?)",
        )
        .bind(i64::try_from(excess).unwrap_or(i64::MAX))
        .execute(&mut self.conn)
        .await
        .map_err(db_error(&self.path))?
        .rows_affected();
        self.rows -= done;
        Ok(done)
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

    #[tokio::test]
    async fn rows_come_back_in_order_across_a_reopen_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 100).await.unwrap();
        for ts in 1..=3 {
            h.push("plc", &ddata(ts)).await.unwrap();
        }
        drop(h);
        let mut h = History::open(dir.path(), 100).await.unwrap();
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
        let mut h = History::open(dir.path(), 3).await.unwrap();
        let mut dropped = 0;
        for ts in 1..=5 {
            dropped += h.push("plc", &ddata(ts)).await.unwrap();
        }
        assert_eq!((dropped, h.rows()), (2, 3));
        let left: Vec<Payload> = h
            .oldest(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(left, vec![ddata(3), ddata(4), ddata(5)]);
    }

    #[tokio::test]
    async fn a_broken_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
        let h = History::open(dir.path(), 100).await.unwrap();
        assert_eq!(h.rows(), 0);
    }
}
