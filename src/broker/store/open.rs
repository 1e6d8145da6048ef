//! Opening `broker.db`: connection settings, schema creation and version
//! check, and setting a broken file aside (see the guarantees in `mod.rs`).
//!
//! Owns the schema. Must not change rows: the writer owns every write after
//! the schema exists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row as _};
use tracing::{error, warn};

use super::{FILE, Loaded, StoreError, q, read};

/// `PRAGMA user_version` of the schema below.
pub(super) const SCHEMA_VERSION: i64 = 2;

const TABLES: [&str; 5] = [
    "sessions",
    "subscriptions",
    "messages",
    "inbound",
    "retained",
];

const SCHEMA: &str = "BEGIN;
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY,
    expiry_s  INTEGER,
    gone_ms   INTEGER
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT    NOT NULL,
    pos       INTEGER NOT NULL,
    filter    TEXT    NOT NULL,
    qos       INTEGER NOT NULL,
    sub_id    INTEGER,
    PRIMARY KEY (client_id, pos)
);
CREATE TABLE IF NOT EXISTS messages (
    client_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    state     INTEGER NOT NULL,
    pkid      INTEGER NOT NULL,
    qos       INTEGER NOT NULL,
    retain    INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    topic     TEXT    NOT NULL,
    payload   BLOB    NOT NULL,
    expires_ms INTEGER,
    props     BLOB,
    sub_ids   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_seq ON messages (client_id, seq);
CREATE TABLE IF NOT EXISTS inbound (
    client_id TEXT    NOT NULL,
    pkid      INTEGER NOT NULL,
    PRIMARY KEY (client_id, pkid)
);
CREATE TABLE IF NOT EXISTS retained (
    topic   TEXT    PRIMARY KEY,
    qos     INTEGER NOT NULL,
    payload BLOB    NOT NULL,
    expires_ms INTEGER,
    props   BLOB
);
PRAGMA user_version = 2;
COMMIT;";

/// From version 1 (before MQTT 5): the columns MQTT 5 added, every row
/// kept (NULL: no expiry, no properties; a session's expiry the cap).
const MIGRATE_1_TO_2: &str = "BEGIN;
ALTER TABLE sessions ADD COLUMN expiry_s INTEGER;
ALTER TABLE sessions ADD COLUMN gone_ms INTEGER;
ALTER TABLE subscriptions ADD COLUMN sub_id INTEGER;
ALTER TABLE messages ADD COLUMN expires_ms INTEGER;
ALTER TABLE messages ADD COLUMN props BLOB;
ALTER TABLE messages ADD COLUMN sub_ids TEXT;
ALTER TABLE retained ADD COLUMN expires_ms INTEGER;
ALTER TABLE retained ADD COLUMN props BLOB;
PRAGMA user_version = 2;
COMMIT;";

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .pragma("cache_size", "-2000")
        .row_buffer_size(1024)
}

/// Opens the store in `data_dir`: the write connection, the read pool and
/// what was loaded. A broken file is set aside and a fresh one opened.
pub(super) async fn open(
    data_dir: &Path,
    preload: usize,
) -> Result<(SqliteConnection, SqlitePool, Loaded), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Folder {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(FILE);
    let (conn, loaded) = match attempt(&path, preload).await {
        Ok(opened) => opened,
        Err(e) if is_broken(&e) => {
            let to = set_aside(&path)?;
            error!(path = %path.display(), set_aside = %to.display(), error = %e,
                "broker store unreadable: file set aside, starting with an empty store \
                 (persistent sessions and retained messages are lost)");
            let (conn, mut loaded) = attempt(&path, preload).await?;
            loaded.set_aside = Some(to);
            (conn, loaded)
        }
        Err(e) => return Err(e),
    };
    let read = SqlitePoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .connect_lazy_with(options(&path));
    Ok((conn, read, loaded))
}

/// Connects, checks or creates the schema and loads; closes the
/// connection on failure (so no late close touches a renamed file's WAL).
async fn attempt(path: &Path, preload: usize) -> Result<(SqliteConnection, Loaded), StoreError> {
    let mut conn = SqliteConnection::connect_with(&options(path))
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let loaded = match prepare(&mut conn, path).await {
        Ok(()) => read::load_all(&mut conn, path, preload).await,
        Err(e) => Err(e),
    };
    match loaded {
        Ok(loaded) => Ok((conn, loaded)),
        Err(e) => {
            if let Err(close) = conn.close().await {
                warn!(path = %path.display(), error = %close, "closing the broker store");
            }
            Err(e)
        }
    }
}

/// Checks the schema version; creates the schema in an empty file.
async fn prepare(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(q(path, "read schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version == 1 {
        return sqlx::raw_sql(MIGRATE_1_TO_2)
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(q(path, "migrate schema 1 to 2"));
    }
    // version 0 (or a negative one): a new, empty file gets the schema;
    // tables of someone else's (or a negative version with tables) mean
    // another format
    let tables = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(q(path, "list tables"))?;
    for t in tables {
        let name: String = t.try_get(0).map_err(q(path, "list tables"))?;
        if !TABLES.contains(&name.as_str()) || version < 0 {
            return Err(StoreError::WrongFormat {
                path: path.to_path_buf(),
                table: name,
            });
        }
    }
    sqlx::raw_sql(SCHEMA)
        .execute(&mut *conn)
        .await
        .map_err(q(path, "create schema"))?;
    Ok(())
}

/// SQLite primary result codes that say the file is not a usable database.
const SQLITE_ERROR: i32 = 1;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FORMAT: i32 = 24;
const SQLITE_NOTADB: i32 = 26;
/// Extended code: the file is shorter than its header says (truncated).
const SQLITE_IOERR_SHORT_READ: i32 = 10 | (2 << 8);

/// `true` when `e`, an error of [`attempt`], says the file is broken (set
/// it aside); `false` when it says something else is wrong (permissions,
/// locks, I/O, memory: report it).
pub(super) fn is_broken(e: &StoreError) -> bool {
    let (source, query) = match e {
        StoreError::NewerSchema { .. }
        | StoreError::WrongFormat { .. }
        | StoreError::BadValue { .. } => return true,
        StoreError::Open { source, .. } => (source, false),
        StoreError::Query { source, .. } => (source, true),
        StoreError::Folder { .. } | StoreError::SetAside { .. } => return false,
    };
    match source {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            // a generic error of one of the open's own queries: no such
            // table or column, i.e. not this schema
            (query && code == SQLITE_ERROR)
                || code == SQLITE_IOERR_SHORT_READ
                || matches!(code & 0xff, SQLITE_CORRUPT | SQLITE_FORMAT | SQLITE_NOTADB)
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// Sets a broken store file aside (see [`crate::data_dir::set_aside`]).
fn set_aside(path: &Path) -> Result<PathBuf, StoreError> {
    crate::data_dir::set_aside(path).map_err(|(to, source)| StoreError::SetAside {
        path: path.to_path_buf(),
        to,
        source,
    })
}

#[cfg(test)]
mod tests {
    //! Unit tests of broken files (garbage, truncated, newer schema, another
    //! format, zero length) and of the migration of a version 1 file.
    //!
    //! Must not touch anything outside their own temporary folders.

    use std::path::Path;

    use sqlx::Connection as _;

    use super::super::FILE;
    use bytes::Bytes;

    use super::super::tests::{CLOSE, add, reopen, roundtrip, stored_sub};
    use super::super::{SessionClock, StoredMessage};

    /// A broken `broker.db` is set aside, an empty store opens and works.
    async fn set_aside_and_fresh(dir: &Path, content: &[u8]) {
        let path = dir.join(FILE);
        std::fs::write(&path, content).expect("write");
        let (store, loaded) = reopen(dir, 10).await;
        let aside = loaded.set_aside.clone().expect("set aside");
        assert!(aside.exists(), "{aside:?}");
        assert_eq!(std::fs::read(&aside).expect("read"), content);
        let name = aside.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.starts_with("broker.db.corrupt-"), "{name}");
        assert!(loaded.sessions.is_empty() && loaded.retained.is_empty());
        store.push(add("f", 1, b"fresh"));
        assert!(store.sync().await);
        store.close(CLOSE).await;
        let (_, loaded) = reopen(dir, 10).await;
        assert_eq!(loaded.set_aside, None);
        assert_eq!(loaded.sessions[0].total_rows, 1);
    }

    #[tokio::test]
    async fn garbage_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
        set_aside_and_fresh(dir.path(), &garbage).await;
    }

    #[tokio::test]
    async fn truncated_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = {
            let (store, _) = reopen(dir.path(), 0).await;
            for seq in 1..=2000u64 {
                store.push(add("t", seq, &[3u8; 300]));
            }
            assert!(store.sync().await);
            store.close(CLOSE).await;
            std::fs::read(dir.path().join(FILE)).expect("read")
        };
        assert!(
            !dir.path().join("broker.db-wal").exists(),
            "checkpointed at close"
        );
        set_aside_and_fresh(dir.path(), &full[..full.len() / 2]).await;
    }

    #[tokio::test]
    async fn newer_schema_and_other_format_are_set_aside() {
        for sql in [
            "PRAGMA user_version = 99",
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY)",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(FILE);
            {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true);
                let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&opts)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
                conn.close().await.expect("close");
            }
            let (_, loaded) = reopen(dir.path(), 10).await;
            assert!(loaded.set_aside.expect(sql).exists());
        }
    }

    #[tokio::test]
    async fn zero_length_file_opens_empty() {
        // SQLite reads an empty file as an empty database: nothing to set aside
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), b"").expect("write");
        let loaded = roundtrip(dir.path(), vec![add("z", 1, b"z")], 10, false).await;
        assert_eq!(loaded.set_aside, None);
        assert_eq!(loaded.sessions[0].messages.len(), 1);
    }

    #[tokio::test]
    async fn a_version_1_file_is_migrated_keeping_every_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let mut conn = <sqlx::sqlite::SqliteConnection as sqlx::Connection>::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .expect("create");
        sqlx::raw_sql(
            "CREATE TABLE sessions (client_id TEXT PRIMARY KEY);
         CREATE TABLE subscriptions (client_id TEXT NOT NULL, pos INTEGER NOT NULL,
             filter TEXT NOT NULL, qos INTEGER NOT NULL, PRIMARY KEY (client_id, pos));
         CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
             state INTEGER NOT NULL, pkid INTEGER NOT NULL, qos INTEGER NOT NULL,
             retain INTEGER NOT NULL, size INTEGER NOT NULL, topic TEXT NOT NULL,
             payload BLOB NOT NULL);
         CREATE UNIQUE INDEX messages_by_seq ON messages (client_id, seq);
         CREATE TABLE inbound (client_id TEXT NOT NULL, pkid INTEGER NOT NULL,
             PRIMARY KEY (client_id, pkid));
         CREATE TABLE retained (topic TEXT PRIMARY KEY, qos INTEGER NOT NULL,
             payload BLOB NOT NULL);
         INSERT INTO sessions VALUES ('old');
         INSERT INTO subscriptions VALUES ('old', 0, 'a/#', 1);
         INSERT INTO messages VALUES ('old', 1, 0, 0, 1, 0, 4, 'a/b', X'6869');
         INSERT INTO retained VALUES ('r/t', 0, X'6f6b');
         PRAGMA user_version = 1;",
        )
        .execute(&mut conn)
        .await
        .expect("v1 schema");
        sqlx::Connection::close(conn).await.expect("close");
        let (store, loaded) = reopen(dir.path(), 10).await;
        assert_eq!(loaded.set_aside, None, "migrated, not set aside");
        let s = &loaded.sessions[0];
        assert_eq!(s.client_id, "old");
        assert_eq!(s.clock, SessionClock::default());
        assert_eq!(s.subscriptions, vec![stored_sub("a/#", 1)]);
        assert_eq!(
            s.messages[0].msg,
            StoredMessage::plain("a/b".into(), Bytes::from_static(b"hi"), 1, false)
        );
        assert_eq!(&loaded.retained[0].payload[..], b"ok");
        store.close(CLOSE).await;
        let (_store, again) = reopen(dir.path(), 10).await;
        assert_eq!(again.sessions.len(), 1, "version 2 opens as it is");
    }
}
