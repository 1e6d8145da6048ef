//! Reads of the outbox for the uplink and the CLI: rows in id order and
//! the table's figures.
//!
//! Owns nothing. Must not write: every write is the writer's (`mod.rs`).

use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

use super::{OutboxError, q};

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
    /// Failed tries upstream so far.
    pub attempts: u32,
    /// QoS 2: PUBREC'd upstream, only the PUBREL is left.
    pub released: bool,
    /// MQTT 5 message expiry in seconds from `created_ms` (0: none).
    pub expiry_s: u32,
    /// MQTT 5 request/response properties of a local client's message.
    pub props: Option<super::RowProps>,
}

/// Depth, bytes and age of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
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

/// A row of `outbox` or `dead` from its first eight columns (`released`
/// is the caller's).
pub(super) fn stored(r: &sqlx::sqlite::SqliteRow) -> Stored {
    Stored {
        id: r.get(0),
        topic: r.get(1),
        payload: bytes::Bytes::from(r.get::<Vec<u8>, _>(2)),
        qos: r.get::<i64, _>(3) as u8,
        retain: r.get::<i64, _>(4) != 0,
        created_ms: r.get(5),
        size: r.get(6),
        attempts: r.get::<i64, _>(7).clamp(0, u32::MAX as i64) as u32,
        released: false,
        expiry_s: 0,
        props: None,
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
        "SELECT id, topic, payload, qos, retain, created_ms, size, attempts, released, expiry_s, props FROM outbox \
         WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
    )
    .bind(lo)
    .bind(hi)
    .bind(limit as i64)
    .fetch_all(ex)
    .await
    .map_err(q("read"))?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            released: r.get::<i64, _>(8) != 0,
            expiry_s: r.get::<i64, _>(9).clamp(0, u32::MAX as i64) as u32,
            props: r
                .get::<Option<Vec<u8>>, _>(10)
                .map(|b| super::RowProps::decode(&b)),
            ..stored(r)
        })
        .collect())
}
