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

#[cfg(test)]
mod tests {
    //! The file's upkeep (`maintain.rs`): the migration of an outbox made
    //! before incremental vacuum, the shrink after a drain, the dead-letter
    //! bound and age.

    use crate::bridge::outbox::maintain::{DEAD_MAX_AGE, DEAD_MAX_ROWS, prune_dead, shrink};
    use sqlx::sqlite::SqliteAutoVacuum;

    use crate::bridge::config::Synchronous;
    use crate::bridge::outbox::open::options;
    use crate::bridge::outbox::*;
    use crate::reading::now_ms;

    fn file_size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    async fn auto_vacuum(conn: &mut SqliteConnection) -> i64 {
        sqlx::query("PRAGMA auto_vacuum")
            .fetch_one(conn)
            .await
            .expect("pragma")
            .get(0)
    }

    #[tokio::test]
    async fn an_outbox_made_before_is_converted_keeping_every_row_and_its_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        {
            // what the outbox's open did before this format: same options,
            // same schema, no auto_vacuum
            let before = options(&path, Synchronous::Full).auto_vacuum(SqliteAutoVacuum::None);
            let mut old = SqliteConnection::connect_with(&before)
                .await
                .expect("old open");
            sqlx::query(SCHEMA).execute(&mut old).await.expect("schema");
            dead::migrate(&mut old).await.expect("migrate");
            for i in 0..300 {
                sqlx::query(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, clock_ms) \
                 VALUES ('t', ?1, 1, 0, 1, 10, 5)",
                )
                .bind(format!("{i:09}").into_bytes())
                .execute(&mut old)
                .await
                .expect("insert");
            }
            // the newest rows went: ids must go on from 300, not from 290
            sqlx::query("DELETE FROM outbox WHERE id > 290")
                .execute(&mut old)
                .await
                .expect("delete");
            assert_eq!(auto_vacuum(&mut old).await, 0);
            old.close().await.expect("close");
        }
        let (pool, mut conn) = open(dir.path(), Synchronous::Full).await.expect("open");
        assert_eq!(
            auto_vacuum(&mut conn).await,
            2,
            "incremental after the open"
        );
        let rows = fetch(&pool, 0, i64::MAX, 1000).await.expect("fetch");
        assert_eq!(rows.len(), 290);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.id, i as i64 + 1);
            assert_eq!(r.payload, bytes::Bytes::from(format!("{i:09}")));
        }
        let (w, progress) =
            Writer::new(conn, BufferConfig::default(), Arc::new(Counters::default()))
                .await
                .expect("writer");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(w.run(rx));
        let (cmd, done) = WriteCmd::insert_now(vec![crate::bridge::outbox::tests::m(300)]);
        tx.send(cmd).await.expect("send");
        assert!(done.await.expect("answer"));
        assert_eq!(
            *progress.committed.borrow(),
            301,
            "ids go on after the old ones"
        );
    }

    #[tokio::test]
    async fn the_file_shrinks_after_a_drain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, conn) = open(dir.path(), Synchronous::Normal).await.expect("open");
        let (mut w, _) = Writer::new(conn, BufferConfig::default(), Arc::new(Counters::default()))
            .await
            .expect("writer");
        let big = |i: usize| NewMessage {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![b'a' + (i % 26) as u8; 1000]),
            qos: 1,
            retain: false,
            expiry_s: 0,
            props: None,
        };
        // an outage: 20,000 messages of 1 KB
        for chunk in 0..20 {
            let (cmd, _) = WriteCmd::insert_now((0..1000).map(|i| big(chunk * 1000 + i)).collect());
            w.acct.commit(&mut w.conn, &mut vec![cmd]).await;
        }
        let path = db_path(dir.path());
        let rows = fetch(&pool, 0, i64::MAX, 100_000).await.expect("fetch");
        // drained: every row acknowledged and deleted
        let acks: Vec<Acked> = rows.iter().map(|r| (r.id, r.size as u64)).collect();
        w.acct
            .commit(&mut w.conn, &mut vec![WriteCmd::Ack(acks)])
            .await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut w.conn)
            .await
            .expect("checkpoint");
        let full = file_size(&path);
        assert!(full > 16 << 20, "{full} bytes after the outage");
        assert!(shrink(&mut w.conn).await.expect("shrink") > 0);
        let small = file_size(&path);
        assert!(small < 1 << 20, "{small} bytes after the shrink");
        let wal = file_size(&dir.path().join("outbox.db-wal"));
        assert!(wal <= 4 << 20, "the WAL keeps {wal} bytes");
        // a short queue's free pages are not worth a shrink
        assert_eq!(shrink(&mut w.conn).await.expect("shrink"), 0);
    }

    #[tokio::test]
    async fn dead_letters_past_the_bound_or_the_age_are_removed_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, mut conn) = open(dir.path(), Synchronous::Normal).await.expect("open");
        let now = now_ms();
        let old = now - DEAD_MAX_AGE.as_millis() as i64 - 1000;
        let mut tx = conn.begin().await.expect("begin");
        // 3 past the age limit, then DEAD_MAX_ROWS + 5 in dead_ms order
        for id in 0..DEAD_MAX_ROWS + 8 {
            let dead_ms = if id < 3 { old } else { now - 100_000 + id };
            sqlx::query(
                "INSERT INTO dead (id, topic, payload, qos, retain, created_ms, size, attempts, \
             reason, dead_ms) VALUES (?1, 't', x'00', 1, 0, 1, 2, 5, 'poison', ?2)",
            )
            .bind(id + 1)
            .bind(dead_ms)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
        assert_eq!(prune_dead(&mut conn).await.expect("prune"), 8);
        assert_eq!(
            dead::count(&pool).await.expect("count"),
            DEAD_MAX_ROWS as u64
        );
        let first = dead::list(&pool, 1).await.expect("list");
        assert_eq!(first[0].msg.id, 9, "the 8 oldest went");
        assert_eq!(prune_dead(&mut conn).await.expect("prune"), 0);
    }
}
