//! The writer task: takes the whole pending batch each round, coalesces it
//! ([`coalesce`]), commits it in one transaction with retries, then resolves the
//! batch's sync waiters (see the guarantees in `mod.rs`).
//!
//! Owns the write connection and every statement that changes rows. Must
//! not read for callers (that is `read.rs`, on its own connections).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::apply;
use super::coalesce::{Op, coalesce};
use super::{Shared, StoreError, q};

/// Tries per batch before it is dropped.
pub const ATTEMPTS: u32 = 4;
/// Wait before each retry.
const BACKOFF_MS: [u64; 3] = [50, 200, 800];

pub(super) struct Writer {
    conn: SqliteConnection,
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Writer {
    pub(super) fn new(conn: SqliteConnection, shared: Arc<Shared>, path: PathBuf) -> Writer {
        Writer { conn, shared, path }
    }

    /// Commits batches until the store is closing and nothing is pending.
    pub(super) async fn run(mut self, stopped: watch::Sender<bool>) {
        loop {
            let (batch, through, bytes, closing) = {
                let mut p = self.shared.lock();
                let bytes = std::mem::take(&mut p.bytes);
                (std::mem::take(&mut p.ops), p.pushed, bytes, p.closing)
            };
            if batch.is_empty() {
                if closing {
                    break;
                }
                self.shared.wake.notified().await;
                continue;
            }
            let (ops, started) = (batch.len(), Instant::now());
            let coalesced = coalesce(batch);
            let committed = coalesced.is_empty() || self.commit(&coalesced).await;
            debug!(
                ops,
                applied = coalesced.len(),
                bytes,
                committed,
                elapsed_us = started.elapsed().as_micros() as u64,
                "broker store commit"
            );
            self.shared.pending_bytes.fetch_sub(bytes, Relaxed);
            let ready = {
                let mut p = self.shared.lock();
                p.done = through;
                let (ready, wait) = std::mem::take(&mut p.waiters)
                    .into_iter()
                    .partition(|(upto, _)| *upto <= through);
                p.waiters = wait;
                ready
            };
            for (_, tx) in ready {
                let _ = tx.send(committed);
            }
            self.shared.drained.notify_waiters();
        }
        if let Err(e) = self.conn.close().await {
            warn!(path = %self.path.display(), error = %e, "closing the broker store");
        }
        let waiters = {
            let mut p = self.shared.lock();
            p.stopped = true;
            std::mem::take(&mut p.waiters)
        };
        for (_, tx) in waiters {
            let _ = tx.send(false);
        }
        self.shared.drained.notify_waiters();
        stopped.send_replace(true);
        debug!(path = %self.path.display(), "broker store writer stopped");
    }

    /// One transaction for the coalesced ops, retried; `true` when committed.
    async fn commit(&mut self, ops: &[Op]) -> bool {
        for attempt in 1..=ATTEMPTS {
            match self.transaction(ops).await {
                Ok(()) => {
                    self.shared.commits.fetch_add(1, Relaxed);
                    return true;
                }
                Err(e) => {
                    let Some(&ms) = BACKOFF_MS.get(attempt as usize - 1) else {
                        self.shared.failed_commits.fetch_add(1, Relaxed);
                        error!(path = %self.path.display(), error = %e, attempts = attempt,
                            ops = ops.len(),
                            failed_commits = self.shared.failed_commits.load(Relaxed),
                            "broker store commit failed: batch dropped");
                        return false;
                    };
                    warn!(path = %self.path.display(), error = %e, attempt,
                        retry_in_ms = ms, "broker store commit failed, retrying");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        }
        false
    }

    async fn transaction(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let path = &self.path;
        let mut tx = self.conn.begin().await.map_err(q(path, "begin"))?;
        apply::batch(&mut tx, path, ops).await?;
        tx.commit().await.map_err(q(path, "commit"))
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of a commit that keeps failing.
    //!
    //! Must not touch anything outside their own temporary folders.

    use std::time::{Duration, Instant};

    use sqlx::Connection as _;

    use super::super::tests::{CLOSE, add, msg, reopen};
    use super::super::{FILE, StoreOp};

    #[tokio::test]
    async fn failed_commit_is_retried_then_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = reopen(dir.path(), 0).await;
        store.push(add("k", 1, b"kept"));
        assert!(store.sync().await);
        // from now on every transaction that sets this retained topic fails
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join(FILE));
        let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&opts)
            .await
            .expect("connect");
        sqlx::raw_sql(
            "CREATE TRIGGER fail BEFORE INSERT ON retained WHEN NEW.topic = 'fail' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .execute(&mut conn)
        .await
        .expect("trigger");
        conn.close().await.expect("close");
        store.push(add("k", 2, b"dropped with its batch"));
        store.push(StoreOp::SetRetained {
            msg: msg("fail", b"x", 0),
        });
        let started = Instant::now();
        assert!(!store.sync().await);
        assert!(started.elapsed() >= Duration::from_millis(1000), "backoff");
        assert_eq!(store.failed_commits(), 1);
        assert_eq!(store.pending_bytes(), 0);
        // the writer goes on
        store.push(add("k", 3, b"next batch"));
        assert!(store.sync().await);
        let rows = store
            .load_messages("k", 0, 10, usize::MAX)
            .await
            .expect("load");
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        store.close(CLOSE).await;
    }
}
