//! The dead-letter table: messages the uplink gave up on (a poison
//! message), so the queue behind them goes on.
//!
//! ```sql
//! CREATE TABLE dead (
//!     id         INTEGER PRIMARY KEY,   -- the id it had in the outbox
//!     topic, payload, qos, retain, created_ms, size, -- as in the outbox
//!     attempts   INTEGER NOT NULL,      -- failed tries upstream
//!     reason     TEXT    NOT NULL,      -- why it was given up on
//!     dead_ms    INTEGER NOT NULL       -- when, ms since the epoch
//! );
//! ```
//!
//! A message moves here when it cannot fit in `uplink.max_packet_size`
//! (it is never sent), or when `uplink.max_attempts` connections dropped
//! while it was the oldest message waiting for its acknowledgement (an
//! upstream broker that refuses a topic or a size by disconnecting, as AWS
//! IoT does). The move is one transaction with the writer's other work,
//! counted in `fieldgate_uplink_dead_total` and logged with the topic.
//! `fieldgate outbox list --dead` shows the table; `fieldgate outbox
//! retry-dead` puts every row back at the end of the outbox with its tries
//! reset. The table is held to a bound and an age limit (`maintain.rs`):
//! the oldest rows past them are removed and counted.
//!
//! Owns the `dead` table and the migration of the outbox's later columns
//! (`attempts`, `clock_ms`, `released`, `expiry_s`, `props`). Must not
//! talk to the network.

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::read::stored;
use super::{OutboxError, Stored, q};
use crate::reading::now_ms;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS dead (
    id         INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    dead_ms    INTEGER NOT NULL
)";

/// A failed try of one outbox row.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: i64,
    /// Failed tries so far, this one included.
    pub attempts: u32,
    /// `Some(reason)`: give up, move the row to `dead`.
    pub dead: Option<String>,
}

/// A row of `dead`.
#[derive(Debug, Clone)]
pub struct DeadRow {
    pub msg: Stored,
    pub reason: String,
    pub dead_ms: i64,
}

/// Adds what an outbox of an earlier version lacks: the `attempts`
/// column and the `dead` table.
pub(super) async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    for (column, ddl) in [
        (
            "attempts",
            "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        ),
        // rows of an earlier version start their age at this start
        (
            "clock_ms",
            "ALTER TABLE outbox ADD COLUMN clock_ms INTEGER NOT NULL DEFAULT 0",
        ),
        // an earlier version PUBREL'd at once: its rows are sent as PUBLISH
        (
            "released",
            "ALTER TABLE outbox ADD COLUMN released INTEGER NOT NULL DEFAULT 0",
        ),
        // rows of an earlier version carry no message expiry
        (
            "expiry_s",
            "ALTER TABLE outbox ADD COLUMN expiry_s INTEGER NOT NULL DEFAULT 0",
        ),
        // rows of an earlier version carry no MQTT 5 properties
        ("props", "ALTER TABLE outbox ADD COLUMN props BLOB"),
    ] {
        let has = sqlx::query("SELECT 1 FROM pragma_table_info('outbox') WHERE name = ?1")
            .bind(column)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !has {
            sqlx::query(ddl).execute(&mut *conn).await?;
        }
    }
    sqlx::query(SCHEMA).execute(&mut *conn).await?;
    Ok(())
}

/// A row [`apply`] moved to `dead`.
pub(super) struct Moved {
    pub topic: String,
    pub size: u64,
    pub attempts: u32,
    pub reason: String,
}

/// Applies `failures` inside the writer's transaction; returns each row
/// moved to `dead`.
pub(super) async fn apply(
    tx: &mut SqliteConnection,
    failures: &[Failure],
) -> Result<Vec<Moved>, OutboxError> {
    let mut moved = Vec::new();
    for f in failures {
        let Some(reason) = &f.dead else {
            sqlx::query("UPDATE outbox SET attempts = ?2 WHERE id = ?1")
                .bind(f.id)
                .bind(f.attempts as i64)
                .execute(&mut *tx)
                .await
                .map_err(q("count a try"))?;
            continue;
        };
        sqlx::query(
            "INSERT OR REPLACE INTO dead \
             (id, topic, payload, qos, retain, created_ms, size, attempts, reason, dead_ms) \
             SELECT id, topic, payload, qos, retain, created_ms, size, ?2, ?3, ?4 \
             FROM outbox WHERE id = ?1",
        )
        .bind(f.id)
        .bind(f.attempts as i64)
        .bind(reason.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(q("dead-letter"))?;
        let row = sqlx::query("DELETE FROM outbox WHERE id = ?1 RETURNING topic, size")
            .bind(f.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("dead-letter"))?;
        if let Some(r) = row {
            moved.push(Moved {
                topic: r.get::<String, _>(0),
                size: r.get::<i64, _>(1) as u64,
                attempts: f.attempts,
                reason: reason.clone(),
            });
        }
    }
    Ok(moved)
}

/// Up to `limit` dead rows, oldest outbox id first.
pub async fn list(pool: &SqlitePool, limit: usize) -> Result<Vec<DeadRow>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, topic, payload, qos, retain, created_ms, size, attempts, reason, dead_ms \
         FROM dead ORDER BY id LIMIT ?1",
    )
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(q("list dead"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let reason = r.get::<String, _>(8);
            let dead_ms = r.get::<i64, _>(9);
            DeadRow {
                msg: stored(&r),
                reason,
                dead_ms,
            }
        })
        .collect())
}

/// Moves every dead row back to the end of the outbox, tries reset, in
/// their old order; returns how many.
pub async fn retry(pool: &SqlitePool) -> Result<u64, OutboxError> {
    let mut tx = pool.begin().await.map_err(q("begin"))?;
    let r = sqlx::query(
        "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, attempts, clock_ms) \
         SELECT topic, payload, qos, retain, ?1, size, 0, \
         COALESCE((SELECT clock_ms FROM outbox ORDER BY id DESC LIMIT 1), 0) FROM dead ORDER BY id",
    )
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(q("retry dead"))?;
    sqlx::query("DELETE FROM dead")
        .execute(&mut *tx)
        .await
        .map_err(q("retry dead"))?;
    tx.commit().await.map_err(q("commit"))?;
    Ok(r.rows_affected())
}

/// Rows in `dead`.
pub async fn count(pool: &SqlitePool) -> Result<u64, OutboxError> {
    let row = sqlx::query("SELECT COUNT(*) FROM dead")
        .fetch_one(pool)
        .await
        .map_err(q("count dead"))?;
    Ok(row.get::<i64, _>(0) as u64)
}
