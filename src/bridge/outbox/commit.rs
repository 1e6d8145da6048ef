//! The writer's commit: one transaction per batch (acknowledged deletes,
//! expiry, inserts, `drop_oldest`), or a deletes-only statement list, and
//! the size accounting that goes with it (see the guarantees in `mod.rs`).
//!
//! Owns the SQL that changes the outbox. Must not talk to the uplink except
//! through the `live` queue and the `committed`/`deleted` watches.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Row as _};
use tracing::{debug, error, warn};

use super::dead::{self, Failure};
use super::{Accounting, Acked, INSERT_CHUNK, NewMessage, OutboxError, WriteCmd, q};
use crate::bridge::config::{Synchronous, WhenFull};
use crate::reading::now_ms;

impl Accounting {
    pub(super) async fn commit(&mut self, conn: &mut SqliteConnection, batch: &mut Vec<WriteCmd>) {
        let mut acks = Vec::new();
        let mut failures = Vec::new();
        let mut inserts = Vec::new();
        let mut waiters = Vec::new();
        let mut refused = 0u64;
        let (before_m, before_b) = (self.messages, self.bytes);
        for cmd in batch.drain(..) {
            match cmd {
                WriteCmd::Ack(ids) => acks.extend(ids),
                WriteCmd::Failed(f) => failures.extend(f),
                WriteCmd::Insert { msgs, done } => {
                    for m in msgs {
                        if self.admit(&m) {
                            inserts.push(m);
                        } else {
                            refused += 1;
                        }
                    }
                    waiters.push(done);
                }
            }
        }
        if refused > 0 {
            self.counters.dropped_newest.fetch_add(refused, Relaxed);
            self.log_drop("drop_newest", refused as usize);
        }
        if inserts.is_empty() && waiters.is_empty() && failures.is_empty() && !self.expiry_due() {
            // deletes only (the drain): one statement list, one round trip
            if let Err(e) = self.delete_only(conn, &acks).await {
                self.counters.io_errors.fetch_add(1, Relaxed);
                error!(error = %e, acks = acks.len(),
                    "outbox delete failed; these messages will be sent again after a restart");
            }
            self.after_commit(conn, acks.len(), before_m).await;
            return;
        }
        let committed = match self.transaction(conn, &acks, &failures, &inserts).await {
            Ok(last_id) => {
                if let Some(id) = last_id {
                    self.committed.send_replace(id);
                }
                true
            }
            Err(e) => {
                // the transaction rolled back: undo the counts it made
                self.messages = before_m;
                self.bytes = before_b;
                self.counters.io_errors.fetch_add(1, Relaxed);
                error!(error = %e, messages = inserts.len(), acks = acks.len(),
                    "outbox commit failed; messages go live only");
                self.go_live(&inserts);
                false
            }
        };
        for done in waiters.into_iter().flatten() {
            let _ = done.send(committed);
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
    pub(super) async fn delete_only(
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
            if live.try_send(m.to_publish()).is_err() {
                self.counters.live_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records the commit time of the oldest row (a primary-key lookup) for
    /// the oldest-age metric; 0 when the outbox is empty. Looked up at most
    /// once a second while rows come and go (a scrape is much rarer).
    pub(super) async fn note_oldest(&mut self, conn: &mut SqliteConnection) {
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
        failures: &[Failure],
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
        let moved = dead::apply(&mut tx, failures).await?;
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
        for (topic, size, attempts, reason) in moved {
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(size);
            self.counters.dead.fetch_add(1, Relaxed);
            warn!(%topic, attempts, %reason,
                "uplink gave up on a message: moved to the dead-letter table \
                 (fieldgate outbox list --dead; retry-dead puts it back)");
        }
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
pub(super) fn runs(acks: &[i64]) -> (Vec<(i64, i64)>, Vec<i64>) {
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
