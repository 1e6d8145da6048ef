//! `max_age` without the wall clock: the outbox's run clock, and the
//! expiry pass the writer makes once a second.
//!
//! A Raspberry Pi has no real-time clock: it boots in 1970 or at the time
//! of its last shutdown and jumps when NTP syncs, by days or years, in
//! either direction. Ages measured on the wall clock would expire a whole
//! backlog at such a jump. So every row carries `clock_ms`, a reading of
//! the **run clock**: milliseconds of the monotonic clock while the
//! gateway runs, continued across restarts from the newest row's
//! `clock_ms`. A step of the wall clock cannot move it. What it does not
//! count is the time the gateway was stopped (or the time between the
//! newest row and the stop): a message can live longer than `max_age`
//! across restarts, never shorter. `created_ms` stays the wall-clock commit
//! time, for display only.
//!
//! Rows in flight upstream (handed to the upstream client, not yet
//! acknowledged: [`super::InFlight`]) are never expired: their
//! acknowledgement may be on its way, and a message counted as expired
//! must not arrive too.
//!
//! Owns the run clock and the expiry SQL. Must not talk to the network.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection};
use tracing::debug;

use super::{Accounting, OutboxError, q};

/// Most rows one expiry statement deletes.
const EXPIRE_CHUNK: i64 = 1000;

/// Milliseconds the gateway has run, over all its runs (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    base_ms: i64,
    start: Instant,
}

impl RunClock {
    /// Continues from the newest row's `clock_ms` (0 for an empty outbox).
    pub(super) async fn resume(conn: &mut SqliteConnection) -> Result<RunClock, OutboxError> {
        let base_ms = sqlx::query("SELECT clock_ms FROM outbox ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(q("read the run clock"))?
            .map_or(0, |r| r.get::<i64, _>(0));
        Ok(RunClock {
            base_ms,
            start: Instant::now(),
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}

/// `id NOT IN (...)` for the rows in flight, or nothing. The ids are
/// integers written by `format!`, nothing from outside.
pub(super) fn not_in_flight(ids: &[i64]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("WHERE id NOT IN ({})", list.join(","))
}

impl Accounting {
    /// Deletes the rows older than `max_age` on the run clock that are not
    /// in flight, in a transaction of its own; a primary-key lookup first,
    /// so a pass that has nothing to expire writes nothing.
    pub(super) async fn expire(&mut self, conn: &mut SqliteConnection) -> Result<(), OutboxError> {
        if self.messages == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let cutoff = now - self.cfg.max_age.get().as_millis() as i64;
        let oldest = sqlx::query("SELECT clock_ms FROM outbox ORDER BY id LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(q("expire"))?
            .map(|r| r.get::<i64, _>(0));
        debug!(
            depth = self.messages,
            oldest_age_ms = oldest.map(|o| now - o),
            max_age_ms = self.cfg.max_age.get().as_millis() as u64,
            "outbox expiry pass"
        );
        if oldest.is_none_or(|o| o >= cutoff) {
            return Ok(());
        }
        let skip = not_in_flight(&self.in_flight.snapshot());
        let sql = format!(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox {skip} ORDER BY id LIMIT {EXPIRE_CHUNK}) \
             AND clock_ms < ?1 RETURNING size, id"
        );
        let mut tx = conn.begin().await.map_err(q("begin"))?;
        let (mut gone, mut ids) = (Vec::new(), Vec::new());
        loop {
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(q("expire"))?;
            let n = rows.len();
            gone.extend(rows.iter().map(|r| r.get::<i64, _>(0) as u64));
            ids.extend(rows.iter().map(|r| r.get::<i64, _>(1)));
            if n < EXPIRE_CHUNK as usize {
                break;
            }
        }
        tx.commit().await.map_err(q("commit"))?;
        if !gone.is_empty() {
            self.forget_sizes(&gone);
            // a row sent while this transaction ran is on its way: not expired
            let n = ids.len() as u64 - self.in_flight.dropped(&ids);
            self.counters.expired.fetch_add(n, Relaxed);
            if n > 0 {
                self.log_drop("expired", n as usize);
            }
            self.counters.depth.store(self.messages, Relaxed);
            self.counters.depth_bytes.store(self.bytes, Relaxed);
            self.note_oldest(conn).await;
        }
        Ok(())
    }
}
