//! Keeping the outbox file small: the format's incremental vacuum (and
//! the migration of an older file to it), the shrink after an outage
//! drained, and the dead-letter table's bound and age limit.
//!
//! - The file is `auto_vacuum = INCREMENTAL`: pages freed by deletes stay
//!   in the file's free list (reused by later inserts, no write of their
//!   own) until [`shrink`] gives them back. An outbox made before this
//!   (`auto_vacuum = NONE`) is converted once at open by a `VACUUM`, which
//!   copies every row with its id and keeps `AUTOINCREMENT`'s counter.
//! - [`shrink`] runs once a minute from the writer and only when the free
//!   list holds at least [`SHRINK_MIN_PAGES`] (a drained outage, not the
//!   steady churn of a short queue, whose pages are reused): it gives the
//!   free pages back to the file system and truncates the WAL, so a card
//!   is not kept full by a file sized for last month's outage.
//! - `dead` keeps at most [`DEAD_MAX_ROWS`] rows, none older than
//!   [`DEAD_MAX_AGE`]; the oldest go first, counted in
//!   `fieldgate_uplink_dropped_total{reason="dead_letter_limit"}`.
//!
//! Owns these statements and the writer's once-a-minute upkeep
//! ([`Accounting::maintain`]). Must not talk to the network.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;
use tracing::{info, warn};

use super::{Accounting, OutboxError, q};
use crate::reading::now_ms;

/// Free pages (4 KiB each) that make a shrink worth its writes: 4 MiB.
pub const SHRINK_MIN_PAGES: i64 = 1024;
/// Pages given back per statement (bounds the time the writer is busy).
const SHRINK_STEP: i64 = 4096;
/// Most rows the dead-letter table keeps.
pub const DEAD_MAX_ROWS: i64 = 10_000;
/// Oldest dead letter kept.
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// Converts a file made before incremental vacuum (the connection asked
/// for it, `open.rs`; a new file has it from its first page) with one
/// `VACUUM` (every row kept). A failed conversion (no room for the copy)
/// is logged; the outbox works without.
pub(super) async fn incremental(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mode: i64 = sqlx::query("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    if mode == 2 {
        return Ok(());
    }
    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
        .execute(&mut *conn)
        .await?;
    info!("outbox: converting the file to incremental vacuum (one VACUUM; every row is kept)");
    if let Err(e) = sqlx::query("VACUUM").execute(&mut *conn).await {
        warn!(error = %e, "outbox: cannot convert to incremental vacuum; \
            the file will not shrink after an outage (tried again at the next start)");
    }
    Ok(())
}

/// Gives the free pages back when there are at least [`SHRINK_MIN_PAGES`]
/// and truncates the WAL; returns the pages given back.
pub(super) async fn shrink(conn: &mut SqliteConnection) -> Result<i64, OutboxError> {
    let free = pragma(conn, "PRAGMA freelist_count").await?;
    if free < SHRINK_MIN_PAGES {
        return Ok(0);
    }
    let before = pragma(conn, "PRAGMA page_count").await?;
    let mut left = free;
    while left > 0 {
        let step = left.min(SHRINK_STEP);
        let sql = format!("PRAGMA incremental_vacuum({step})");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(q("incremental_vacuum"))?;
        left -= step;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await
        .map_err(q("checkpoint"))?;
    let after = pragma(conn, "PRAGMA page_count").await?;
    info!(
        pages_before = before,
        pages_after = after,
        "outbox file shrunk after a drain"
    );
    Ok(before - after)
}

async fn pragma(conn: &mut SqliteConnection, sql: &'static str) -> Result<i64, OutboxError> {
    Ok(sqlx::query(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(q("pragma"))?
        .get(0))
}

/// Removes dead letters older than [`DEAD_MAX_AGE`] and the oldest past
/// [`DEAD_MAX_ROWS`]; returns how many.
pub(super) async fn prune_dead(conn: &mut SqliteConnection) -> Result<u64, OutboxError> {
    let cutoff = now_ms() - DEAD_MAX_AGE.as_millis() as i64;
    let old = sqlx::query("DELETE FROM dead WHERE dead_ms < ?1")
        .bind(cutoff)
        .execute(&mut *conn)
        .await
        .map_err(q("prune dead"))?
        .rows_affected();
    let over = sqlx::query(
        "DELETE FROM dead WHERE id IN (SELECT id FROM dead ORDER BY dead_ms, id \
         LIMIT MAX(0, (SELECT COUNT(*) FROM dead) - ?1))",
    )
    .bind(DEAD_MAX_ROWS)
    .execute(&mut *conn)
    .await
    .map_err(q("prune dead"))?
    .rows_affected();
    Ok(old + over)
}

impl Accounting {
    /// Shrinks the file after a drain and prunes the dead letters
    /// (once a minute); failures are logged and counted, tried again later.
    pub(super) async fn maintain(&mut self, conn: &mut SqliteConnection) {
        if let Err(e) = shrink(conn).await {
            self.counters.io_errors.fetch_add(1, Relaxed);
            warn!(error = %e, "outbox shrink failed; tried again in a minute");
        }
        match prune_dead(conn).await {
            Ok(0) => {}
            Ok(n) => {
                self.counters.dead_pruned.fetch_add(n, Relaxed);
                warn!(
                    removed = n,
                    "dead-letter table over its bound or age limit: oldest removed"
                );
            }
            Err(e) => {
                self.counters.io_errors.fetch_add(1, Relaxed);
                warn!(error = %e, "dead-letter pruning failed; tried again in a minute");
            }
        }
    }
}
