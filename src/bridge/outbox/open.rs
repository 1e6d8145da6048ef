//! Opening the outbox file: connection options, the schema and its
//! migration, and what happens to a file that is not a usable database.
//!
//! A broken file (garbage, truncated, corrupt pages, another format: SD
//! card corruption) would stop the gateway at every start. Instead it is
//! renamed to `outbox.db.corrupt-<unix seconds>` (its `-wal` along), a
//! fresh outbox is opened, and the caller reports it (log, counter,
//! `/healthz`, the systemd STATUS line). The rows of the broken file are
//! not read back; the file is kept for the operator. Errors that say
//! nothing about the file (permissions, a read-only file system, a lock)
//! are not taken as corruption: the caller runs without an outbox.
//!
//! Owns the file names and the classification. Must not talk to the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Connection;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};

use super::{OutboxError, Progress, SCHEMA, Writer, dead, maintain};
use crate::bridge::config::{BufferConfig, Synchronous};
use crate::bridge::counters::Counters;

pub(super) fn options(path: &Path, sync: Synchronous) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // before journal_mode (sqlx orders it so): a new file is
        // incremental from its first page (`maintain.rs`)
        .auto_vacuum(SqliteAutoVacuum::Incremental)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match sync {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(std::time::Duration::from_secs(5))
        .pragma("cache_size", "-2000")
        // the WAL file goes back to this size after a checkpoint (a drain
        // of a long outage leaves no large -wal behind)
        .pragma("journal_size_limit", "4194304")
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
    maintain::incremental(&mut conn).await.map_err(open_err)?;
    sqlx::query(SCHEMA)
        .execute(&mut conn)
        .await
        .map_err(open_err)?;
    dead::migrate(&mut conn).await.map_err(open_err)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts.clone())
        .await
        .map_err(open_err)?;
    Ok((pool, conn))
}

/// An open outbox and its writer.
pub struct Opened {
    pub pool: SqlitePool,
    pub writer: Writer,
    pub progress: Progress,
    /// When the file was broken: where it went, and what was wrong.
    pub set_aside: Option<(PathBuf, String)>,
}

/// Opens the outbox and its writer (whose start reads every row's size,
/// so a corrupt table shows here); a broken file is set aside and a fresh
/// one opened.
pub async fn open_or_set_aside(
    data_dir: &Path,
    cfg: &BufferConfig,
    counters: &Arc<Counters>,
) -> Result<Opened, OutboxError> {
    let first = attempt(data_dir, cfg, counters).await;
    let error = match first {
        Ok((pool, writer, progress)) => {
            return Ok(Opened {
                pool,
                writer,
                progress,
                set_aside: None,
            });
        }
        Err(e) if is_broken(&e) => e.to_string(),
        Err(e) => return Err(e),
    };
    let to = set_aside(&db_path(data_dir))?;
    let (pool, writer, progress) = attempt(data_dir, cfg, counters).await?;
    Ok(Opened {
        pool,
        writer,
        progress,
        set_aside: Some((to, error)),
    })
}

async fn attempt(
    data_dir: &Path,
    cfg: &BufferConfig,
    counters: &Arc<Counters>,
) -> Result<(SqlitePool, Writer, Progress), OutboxError> {
    let (pool, conn) = open(data_dir, cfg.synchronous).await?;
    match Writer::new(conn, cfg.clone(), counters.clone()).await {
        Ok((w, p)) => Ok((pool, w, p)),
        Err(e) => {
            pool.close().await;
            Err(e)
        }
    }
}

/// SQLite primary result codes that say the file is not a usable database.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FORMAT: i32 = 24;
const SQLITE_NOTADB: i32 = 26;
/// Extended code: the file is shorter than its header says (truncated).
const SQLITE_IOERR_SHORT_READ: i32 = 10 | (2 << 8);

/// `true` when `e` says the file itself is broken.
fn is_broken(e: &OutboxError) -> bool {
    let source = match e {
        OutboxError::Open { source, .. } | OutboxError::Query { source, .. } => source,
        _ => return false,
    };
    match source {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            code == SQLITE_IOERR_SHORT_READ
                || matches!(code & 0xff, SQLITE_CORRUPT | SQLITE_FORMAT | SQLITE_NOTADB)
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// Sets a broken outbox file aside (see [`crate::data_dir::set_aside`]).
fn set_aside(path: &Path) -> Result<PathBuf, OutboxError> {
    crate::data_dir::set_aside(path).map_err(|(_, source)| OutboxError::SetAside {
        path: path.to_path_buf(),
        source,
    })
}
