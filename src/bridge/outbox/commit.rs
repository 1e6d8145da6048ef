//! The writer's commit: one transaction per batch (acknowledged deletes,
//! failed tries, inserts, `drop_oldest`), retried with a growing pause when
//! it fails, or a deletes-only statement list, and the size accounting that
//! goes with it (see the guarantees in `mod.rs`).
//!
//! Owns the SQL that changes the outbox. Must not talk to the uplink except
//! through the `live` queue and the `committed`/`deleted` watches.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Row as _};
use tracing::{debug, error, warn};

use super::dead::{self, Failure};
use super::delete::delete_sql;
use super::expire::not_in_flight;
use super::{
    Accounting, Acked, COMMIT_TRIES, INSERT_CHUNK, NewMessage, OutboxError, RowProps, WriteCmd, q,
};
use crate::bridge::config::{Synchronous, WhenFull};
use crate::reading::now_ms;

/// What one commit writes.
#[derive(Clone, Copy)]
struct Batch<'a> {
    acks: &'a [Acked],
    failures: &'a [Failure],
    releases: &'a [i64],
    inserts: &'a [NewMessage],
}

impl Accounting {
    pub(super) async fn commit(&mut self, conn: &mut SqliteConnection, batch: &mut Vec<WriteCmd>) {
        let mut acks = Vec::new();
        let mut failures = Vec::new();
        let mut releases = Vec::new();
        let mut inserts = Vec::new();
        let mut waiters = Vec::new();
        let mut refused = 0u64;
        let (before_m, before_b) = (self.messages, self.bytes);
        for cmd in batch.drain(..) {
            match cmd {
                WriteCmd::Ack(ids) => acks.extend(ids),
                WriteCmd::Failed(f) => failures.extend(f),
                WriteCmd::Release(ids) => releases.extend(ids),
                WriteCmd::Insert { msgs, done, .. } => {
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
        if inserts.is_empty() && waiters.is_empty() && failures.is_empty() && releases.is_empty() {
            // deletes only (the drain): one statement list, one round trip
            let deleted = self.delete_only(conn, &acks).await;
            self.disk(deleted.as_ref().err());
            if let Err(e) = deleted {
                self.counters.io_errors.fetch_add(1, Relaxed);
                error!(error = %e, acks = acks.len(),
                    "outbox delete failed; these messages will be sent again after a restart");
            }
            self.after_commit(conn, acks.len(), before_m).await;
            return;
        }
        let batch = Batch {
            acks: &acks,
            failures: &failures,
            releases: &releases,
            inserts: &inserts,
        };
        let committed = self
            .commit_with_retries(conn, batch, (before_m, before_b))
            .await;
        for done in waiters.into_iter().flatten() {
            let _ = done.send(committed);
        }
        if !releases.is_empty() {
            // handled either way: a failed mark only means the row is sent
            // as PUBLISH after a crash (the broker drops it as a duplicate)
            self.released.send_modify(|d| *d += releases.len() as u64);
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

    /// Runs the batch's transaction, up to [`COMMIT_TRIES`] times with a
    /// growing pause (100 ms, 400 ms, 1.6 s): a busy database or a disk
    /// that had no room a moment ago often takes the next try. When every
    /// try failed the messages go to the live queue (see `mod.rs`).
    async fn commit_with_retries(
        &mut self,
        conn: &mut SqliteConnection,
        batch: Batch<'_>,
        before: (u64, u64),
    ) -> bool {
        let (acks, inserts) = (batch.acks, batch.inserts);
        // the counts with this batch's inserts admitted, for each try
        let admitted = (self.messages, self.bytes);
        let mut pause = std::time::Duration::from_millis(100);
        for attempt in 1..=COMMIT_TRIES {
            match self.transaction(conn, batch).await {
                Ok(last_id) => {
                    self.disk(None);
                    if let Some(id) = last_id {
                        self.committed.send_replace(id);
                    }
                    if attempt > 1 {
                        warn!(
                            attempt,
                            messages = inserts.len(),
                            "outbox commit succeeded after a retry"
                        );
                    }
                    return true;
                }
                Err(e) => {
                    // the transaction rolled back: undo the counts it made
                    (self.messages, self.bytes) = admitted;
                    self.disk(Some(&e));
                    self.counters.io_errors.fetch_add(1, Relaxed);
                    if attempt < COMMIT_TRIES {
                        warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64,
                            messages = inserts.len(), "outbox commit failed; trying again");
                        tokio::time::sleep(pause).await;
                        pause *= 4;
                    } else {
                        error!(error = %e, attempts = attempt, messages = inserts.len(), acks = acks.len(),
                            "outbox commit failed; messages go live only (dropped and counted \
                             in live_dropped when the uplink is down; local clients get no PUBACK)");
                    }
                }
            }
        }
        (self.messages, self.bytes) = before;
        self.go_live(inserts);
        false
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
        let (relax, restore) = match self.cfg.synchronous {
            Synchronous::Full => ("PRAGMA synchronous=NORMAL;", "PRAGMA synchronous=FULL;"),
            Synchronous::Normal => ("", ""),
        };
        // every DELETE returns the size of each row it deleted
        let sql = format!(
            "{relax}BEGIN IMMEDIATE;{}COMMIT;{restore}",
            delete_sql(acks)
        );
        match sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => {
                self.forget_rows(&rows);
                self.in_flight.remove(acks.iter().map(|a| a.0));
                Ok(())
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

    fn go_live(&self, msgs: &[NewMessage]) {
        let Some(live) = &self.live else { return };
        for m in msgs {
            if live.try_send(m.to_publish()).is_err() {
                self.counters.live_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records when the oldest row was committed (a primary-key lookup) for
    /// the oldest-age metric, as the wall-clock time that is its age on the
    /// run clock ago (so a clock step does not make it days old); 0 when
    /// the outbox is empty. Looked up at most once a second while rows come
    /// and go (a scrape is much rarer).
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
            let now = self.clock.now_ms();
            sqlx::query("SELECT clock_ms FROM outbox ORDER BY id LIMIT 1")
                .fetch_optional(&mut *conn)
                .await
                .map(|row| row.map(|r| now_ms() - (now - r.get::<i64, _>(0)).max(0)))
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

    /// One transaction: acked deletes, failed tries, release marks,
    /// inserts, `drop_oldest`. Returns the last inserted id, if any.
    async fn transaction(
        &mut self,
        conn: &mut SqliteConnection,
        batch: Batch<'_>,
    ) -> Result<Option<i64>, OutboxError> {
        let Batch {
            acks,
            failures,
            releases,
            inserts,
        } = batch;
        let mut tx = conn.begin().await.map_err(q("begin"))?;
        let mut deleted = Vec::new();
        if !acks.is_empty() {
            deleted = sqlx::raw_sql(AssertSqlSafe(delete_sql(acks)))
                .fetch_all(&mut *tx)
                .await
                .map_err(q("delete"))?;
        }
        let moved = dead::apply(&mut tx, failures).await?;
        for chunk in releases.chunks(INSERT_CHUNK * 8) {
            let sql = format!(
                "UPDATE outbox SET released = 1 WHERE id IN ({})",
                vec!["?"; chunk.len()].join(",")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await.map_err(q("release"))?;
        }
        let (now, clock) = (now_ms(), self.clock.now_ms());
        let mut last = None;
        for chunk in inserts.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size, clock_ms, expiry_s, props) VALUES {}",
                vec!["(?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for m in chunk {
                query = query
                    .bind(m.topic.as_str())
                    .bind(m.payload.as_ref())
                    .bind(m.qos as i64)
                    .bind(m.retain as i64)
                    .bind(now)
                    .bind(m.size() as i64)
                    .bind(clock)
                    .bind(i64::from(m.expiry_s))
                    .bind(m.props.as_ref().map(RowProps::encode));
            }
            let r = query.execute(&mut *tx).await.map_err(q("insert"))?;
            last = Some(r.last_insert_rowid());
        }
        // the acked rows' sizes come off before drop_oldest looks (a failed
        // transaction has its caller restore the counts)
        self.forget_rows(&deleted);
        let dropped = match self.cfg.when_full {
            WhenFull::DropOldest => self.drop_oldest(&mut tx).await?,
            WhenFull::DropNewest => Vec::new(),
        };
        tx.commit().await.map_err(q("commit"))?;
        if !dropped.is_empty() {
            // a row sent while this transaction ran is on its way: not dropped
            let n = dropped.len() as u64 - self.in_flight.dropped(&dropped);
            self.counters.dropped_oldest.fetch_add(n, Relaxed);
            if n > 0 {
                self.log_drop("drop_oldest", n as usize);
            }
        }
        self.in_flight.remove(acks.iter().map(|a| a.0));
        self.in_flight
            .remove(failures.iter().filter(|f| f.dead.is_some()).map(|f| f.id));
        self.counters
            .committed
            .fetch_add(inserts.len() as u64, Relaxed);
        for dead::Moved {
            topic,
            size,
            attempts,
            reason,
        } in moved
        {
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(size);
            self.counters.dead.fetch_add(1, Relaxed);
            warn!(%topic, attempts, %reason,
                "uplink gave up on a message: moved to the dead-letter table \
                 (fieldgate outbox list --dead; retry-dead puts it back)");
        }
        Ok(last)
    }

    /// Deletes the oldest rows not sent until the limits hold; returns
    /// their ids (counted by the caller once the transaction committed).
    async fn drop_oldest(&mut self, tx: &mut SqliteConnection) -> Result<Vec<i64>, OutboxError> {
        let mut dropped = Vec::new();
        let skip = not_in_flight(&self.in_flight.snapshot());
        let sql = format!(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox {skip} ORDER BY id LIMIT ?1) \
             RETURNING size, id"
        );
        while self.messages > self.cfg.max_messages || self.bytes > self.cfg.max_bytes.bytes() {
            let over = self.messages.saturating_sub(self.cfg.max_messages).max(1);
            let n = over.min(1000) as i64;
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(n)
                .fetch_all(&mut *tx)
                .await
                .map_err(q("drop_oldest"))?;
            if rows.is_empty() {
                // what is left is in flight: it goes when acknowledged
                break;
            }
            self.forget_rows(&rows);
            dropped.extend(rows.iter().map(|r| r.get::<i64, _>(1)));
        }
        Ok(dropped)
    }

    /// Takes deleted rows off the counts: `rows` hold each one's `size`.
    fn forget_rows(&mut self, rows: &[sqlx::sqlite::SqliteRow]) {
        let sizes: Vec<u64> = rows.iter().map(|r| r.get::<i64, _>(0) as u64).collect();
        self.forget_sizes(&sizes);
    }

    pub(super) fn forget_sizes(&mut self, sizes: &[u64]) {
        self.messages = self.messages.saturating_sub(sizes.len() as u64);
        self.bytes = self.bytes.saturating_sub(sizes.iter().sum());
    }

    pub(super) fn log_drop(&mut self, policy: &'static str, n: usize) {
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

#[cfg(test)]
mod tests {
    //! The writer's limits against the database itself: exact counts while
    //! acknowledgements, drops and inserts interleave, rows in flight kept,
    //! expiry on the run clock, commits retried (issue 13, items 3, 4, 8).

    use std::time::Duration;

    use crate::bridge::config::Synchronous;
    use crate::bridge::outbox::tests::m;
    use crate::bridge::outbox::*;

    struct Setup {
        _dir: tempfile::TempDir,
        pool: SqlitePool,
        tx: mpsc::Sender<WriteCmd>,
        counters: Arc<Counters>,
        in_flight: InFlight,
    }

    async fn start(cfg: BufferConfig) -> Setup {
        let r = crate::bridge::outbox::tests::running(cfg).await;
        Setup {
            _dir: r.dir,
            pool: r.pool,
            tx: r.tx,
            counters: r.counters,
            in_flight: r.progress.in_flight,
        }
    }

    impl Setup {
        async fn insert(&self, msgs: Vec<NewMessage>) -> bool {
            let (done, wait) = oneshot::channel();
            let cmd = WriteCmd::Insert {
                msgs,
                done: Some(done),
                commit: Commit::Now,
            };
            self.tx.send(cmd).await.expect("send");
            wait.await.expect("reply")
        }

        async fn rows(&self) -> Vec<Stored> {
            fetch(&self.pool, 0, i64::MAX, 100_000)
                .await
                .expect("fetch")
        }

        /// The counters say what the table holds.
        async fn assert_counts_match(&self) {
            let s = stats(&self.pool).await.expect("stats");
            assert_eq!(self.counters.depth.load(Relaxed), s.messages, "depth");
            assert_eq!(self.counters.depth_bytes.load(Relaxed), s.bytes, "bytes");
        }
    }

    fn acks(rows: &[Stored]) -> Vec<Acked> {
        rows.iter().map(|r| (r.id, r.size as u64)).collect()
    }

    #[tokio::test]
    async fn a_full_outbox_never_drops_rows_in_flight_and_its_counts_stay_exact() {
        let cfg = BufferConfig {
            max_messages: 10,
            ..BufferConfig::default()
        };
        let s = start(cfg).await;
        assert!(s.insert((0..10).map(m).collect()).await);
        let first = s.rows().await;
        // the uplink sent the three oldest; they wait for their PUBACK
        for r in &first[..3] {
            assert!(s.in_flight.claim(r.id));
        }
        assert!(s.insert((10..15).map(m).collect()).await);
        let rows = s.rows().await;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        for r in &first[..3] {
            assert!(ids.contains(&r.id), "in-flight row {} was dropped", r.id);
        }
        assert_eq!(rows.len(), 10);
        assert_eq!(s.counters.dropped_oldest.load(Relaxed), 5);
        s.assert_counts_match().await;

        // a slow uplink: acks of the in-flight rows (one twice), a row sent
        // meanwhile, and more inserts, all in one commit batch
        assert!(s.in_flight.claim(rows[3].id));
        let mut acked = acks(&rows[..3]);
        acked.push((rows[0].id, rows[0].size as u64));
        s.tx.send(WriteCmd::Ack(acked)).await.expect("ack");
        assert!(s.insert((15..20).map(m).collect()).await);
        let after = s.rows().await;
        assert_eq!(after.len(), 10, "the limit holds once the acks are in");
        assert!(after.iter().any(|r| r.id == rows[3].id), "in flight: kept");
        assert_eq!(s.counters.dropped_oldest.load(Relaxed), 5 + 2);
        assert_eq!(
            s.in_flight.snapshot(),
            vec![rows[3].id],
            "acked rows leave the set"
        );
        s.assert_counts_match().await;

        // every row in flight and the outbox full: the oldest row not in
        // flight is the new one; the limit holds and no sent message is dropped
        for r in &after {
            assert!(s.in_flight.claim(r.id));
        }
        assert!(s.insert(vec![m(20)]).await);
        let last = s.rows().await;
        assert_eq!(last.len(), 10);
        assert_eq!(
            last.iter().map(|r| r.id).collect::<Vec<_>>(),
            after.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        assert_eq!(s.counters.dropped_oldest.load(Relaxed), 8);
        s.assert_counts_match().await;
        // acks of rows already gone (dropped or acked before) change nothing
        s.tx.send(WriteCmd::Ack(acks(&first[3..8])))
            .await
            .expect("ack");
        assert!(s.insert(vec![]).await);
        s.assert_counts_match().await;
    }

    /// A writer driven by hand (no task), to run expiry passes directly.
    async fn writer_at(dir: &std::path::Path, cfg: BufferConfig) -> (SqlitePool, Writer, Progress) {
        let (pool, conn) = open(dir, Synchronous::Full).await.expect("open");
        let (w, p) = Writer::new(conn, cfg, Arc::new(Counters::default()))
            .await
            .expect("writer");
        (pool, w, p)
    }

    #[tokio::test]
    async fn expiry_follows_the_run_clock_not_the_wall_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = BufferConfig {
            max_age: crate::config::TimeSpan::from_secs(3600),
            ..BufferConfig::default()
        };
        let (pool, mut w, _) = writer_at(dir.path(), cfg.clone()).await;
        let mut batch = vec![WriteCmd::Insert {
            msgs: (0..5).map(m).collect(),
            done: None,
            commit: Commit::Now,
        }];
        w.acct.commit(&mut w.conn, &mut batch).await;
        // the wall clock jumps (NTP sync on a Pi that booted in 1970): the
        // rows look 56 years old on the wall clock
        sqlx::query("UPDATE outbox SET created_ms = created_ms - 56 * 365 * 86400000")
            .execute(&pool)
            .await
            .expect("step");
        w.acct.expire(&mut w.conn).await.expect("expire");
        assert_eq!(
            stats(&pool).await.expect("stats").messages,
            5,
            "nothing expired"
        );
        assert_eq!(w.acct.counters.expired.load(Relaxed), 0);
        let newest = w.acct.clock.now_ms();
        drop(w);
        pool.close().await;

        // a restart continues the run clock from the newest row
        let (pool, mut w, _) = writer_at(dir.path(), cfg).await;
        assert!(w.acct.clock.now_ms() >= newest - 1000);
        // the rows are an hour and a second old on the run clock; one is in flight
        sqlx::query("UPDATE outbox SET clock_ms = clock_ms - 3601000")
            .execute(&pool)
            .await
            .expect("age");
        let ids: Vec<i64> = fetch(&pool, 0, i64::MAX, 10)
            .await
            .expect("fetch")
            .iter()
            .map(|r| r.id)
            .collect();
        assert!(w.acct.in_flight.claim(ids[0]));
        w.acct.expire(&mut w.conn).await.expect("expire");
        let left = fetch(&pool, 0, i64::MAX, 10).await.expect("fetch");
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
        assert_eq!(w.acct.counters.expired.load(Relaxed), 4);
        assert_eq!(w.acct.messages, 1);
        assert_eq!(w.acct.counters.depth.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_busy_database_is_retried_and_the_message_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, _) = open(dir.path(), Synchronous::Full).await.expect("open");
        // the writer's connection gives up on a lock after 50 ms
        let quick = open::options(&db_path(dir.path()), Synchronous::Full)
            .busy_timeout(Duration::from_millis(50));
        let conn = sqlx::ConnectOptions::connect(&quick)
            .await
            .expect("connect");
        let counters = Arc::new(Counters::default());
        let (w, _) = Writer::new(conn, BufferConfig::default(), counters.clone())
            .await
            .expect("writer");
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(w.run(rx));
        // another process holds the write lock (SQLITE_BUSY for the writer)
        let mut other = pool.acquire().await.expect("acquire");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .expect("lock");
        let (done, wait) = oneshot::channel();
        tx.send(WriteCmd::Insert {
            msgs: vec![m(1)],
            done: Some(done),
            commit: Commit::Now,
        })
        .await
        .expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while counters.io_errors.load(Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no failed try");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sqlx::query("COMMIT")
            .execute(&mut *other)
            .await
            .expect("unlock");
        drop(other);
        assert!(wait.await.expect("reply"), "committed on a later try");
        let errors = counters.io_errors.load(Relaxed);
        assert!(
            (1..COMMIT_TRIES as u64).contains(&errors),
            "{errors} failed tries"
        );
        assert_eq!(stats(&pool).await.expect("stats").messages, 1);
        assert_eq!(counters.live_dropped.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_row_read_ahead_and_then_dropped_is_not_sent_nor_counted_twice() {
        let cfg = BufferConfig {
            max_messages: 5,
            ..BufferConfig::default()
        };
        let s = start(cfg).await;
        assert!(s.insert((0..5).map(m).collect()).await);
        // the forwarder starts a read and gets the five rows (not sent yet)
        let started = s.in_flight.generation();
        let read = s.rows().await;
        // meanwhile two more commits drop the two oldest
        assert!(s.insert((5..7).map(m).collect()).await);
        assert_eq!(s.counters.dropped_oldest.load(Relaxed), 2);
        // the read's rows reach the cursor: the dropped ones are not sent
        let sent: Vec<i64> = read
            .iter()
            .map(|r| r.id)
            .filter(|id| s.in_flight.claim(*id))
            .collect();
        assert_eq!(sent, read[2..].iter().map(|r| r.id).collect::<Vec<_>>());
        // nothing held any more: the gone entries are forgotten after the read
        s.in_flight.forget_gone(started, |_| false);
        assert_eq!(s.in_flight.gone_len(), 0);
        s.assert_counts_match().await;
    }
}
