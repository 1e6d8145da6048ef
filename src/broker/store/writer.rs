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

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::coalesce::{Op, coalesce};
use super::read::encode_state;
use super::{OutState, Shared, StoreError, StoreOp, q};

/// Tries per batch before it is dropped.
pub const ATTEMPTS: u32 = 4;
/// Wait before each retry.
const BACKOFF_MS: [u64; 3] = [50, 200, 800];
/// Rows per multi-row INSERT; a run is cut into these sizes so SQLite's
/// statement cache holds four INSERTs, not one per run length.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

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
        let mut i = 0;
        while i < ops.len() {
            let mut j = i + 1;
            match &ops[i] {
                Op::Add { .. } => {
                    while j < ops.len() && matches!(ops[j], Op::Add { .. }) {
                        j += 1;
                    }
                    insert(&mut tx, path, &ops[i..j]).await?;
                }
                Op::Other(StoreOp::RemoveMessage { client_id, seq }) => {
                    let mut hi = *seq;
                    while let Some(Op::Other(StoreOp::RemoveMessage {
                        client_id: c,
                        seq: s,
                    })) = ops.get(j)
                        && c == client_id
                        && hi.checked_add(1) == Some(*s)
                    {
                        hi = *s;
                        j += 1;
                    }
                    sqlx::query(
                        "DELETE FROM messages WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3",
                    )
                    .bind(client_id.as_str())
                    .bind(*seq as i64)
                    .bind(hi as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(q(path, "remove message"))?;
                }
                Op::Other(op) => apply(&mut tx, path, op).await?,
            }
            i = j;
        }
        tx.commit().await.map_err(q(path, "commit"))
    }
}

/// Inserts a run of `Add`s, in multi-row statements.
async fn insert(
    conn: &mut SqliteConnection,
    path: &std::path::Path,
    adds: &[Op],
) -> Result<(), StoreError> {
    let mut rest = adds;
    while !rest.is_empty() {
        let n = CHUNKS.into_iter().find(|&c| c <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let sql = format!(
            "INSERT OR REPLACE INTO messages \
             (client_id, seq, state, pkid, qos, retain, size, topic, payload) VALUES {}",
            vec!["(?,?,?,?,?,?,?,?,?)"; n].join(",")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for op in chunk {
            if let Op::Add {
                client_id,
                seq,
                msg,
                state,
            } = op
            {
                let (state, pkid) = encode_state(*state);
                query = query
                    .bind(client_id.as_str())
                    .bind(*seq as i64)
                    .bind(state)
                    .bind(pkid)
                    .bind(i64::from(msg.qos))
                    .bind(i64::from(msg.retain))
                    .bind((msg.topic.len() + msg.payload.len()) as i64)
                    .bind(msg.topic.as_str())
                    .bind(msg.payload.as_ref());
            }
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(q(path, "add message"))?;
    }
    Ok(())
}

/// Applies one op other than a run of `Add`s or `RemoveMessage`s.
async fn apply(
    conn: &mut SqliteConnection,
    path: &std::path::Path,
    op: &StoreOp,
) -> Result<(), StoreError> {
    match op {
        StoreOp::SaveSession {
            client_id,
            subscriptions,
        } => {
            let op = "save session";
            sqlx::query("INSERT OR IGNORE INTO sessions (client_id) VALUES (?1)")
                .bind(client_id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(q(path, op))?;
            sqlx::query("DELETE FROM subscriptions WHERE client_id = ?1")
                .bind(client_id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(q(path, op))?;
            for (pos, (filter, qos)) in subscriptions.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO subscriptions (client_id, pos, filter, qos) VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(client_id.as_str())
                .bind(pos as i64)
                .bind(filter.as_str())
                .bind(i64::from(*qos))
                .execute(&mut *conn)
                .await
                .map_err(q(path, op))?;
            }
        }
        StoreOp::Subscribe {
            client_id,
            filter,
            qos,
        } => subscribe(conn, path, client_id, filter, *qos).await?,
        StoreOp::Unsubscribe { client_id, filter } => {
            sqlx::query("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")
                .bind(client_id.as_str())
                .bind(filter.as_str())
                .execute(&mut *conn)
                .await
                .map_err(q(path, "unsubscribe"))?;
        }
        StoreOp::DeleteSession { client_id } => {
            for sql in [
                "DELETE FROM sessions WHERE client_id = ?1",
                "DELETE FROM subscriptions WHERE client_id = ?1",
                "DELETE FROM messages WHERE client_id = ?1",
                "DELETE FROM inbound WHERE client_id = ?1",
            ] {
                sqlx::query(sql)
                    .bind(client_id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(q(path, "delete session"))?;
            }
        }
        StoreOp::AddMessage {
            client_id,
            seq,
            msg,
        } => {
            let add = Op::Add {
                client_id: client_id.clone(),
                seq: *seq,
                msg: msg.clone(),
                state: OutState::Queued,
            };
            insert(conn, path, std::slice::from_ref(&add)).await?;
        }
        StoreOp::SetState {
            client_id,
            seq,
            state,
        } => {
            let (state, pkid) = encode_state(*state);
            sqlx::query(
                "UPDATE messages SET state = ?1, pkid = ?2 WHERE client_id = ?3 AND seq = ?4",
            )
            .bind(state)
            .bind(pkid)
            .bind(client_id.as_str())
            .bind(*seq as i64)
            .execute(&mut *conn)
            .await
            .map_err(q(path, "set state"))?;
        }
        StoreOp::RemoveMessage { client_id, seq } => {
            sqlx::query("DELETE FROM messages WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?2")
                .bind(client_id.as_str())
                .bind(*seq as i64)
                .execute(&mut *conn)
                .await
                .map_err(q(path, "remove message"))?;
        }
        StoreOp::AddInbound { client_id, pkid } => {
            sqlx::query("INSERT OR IGNORE INTO inbound (client_id, pkid) VALUES (?1, ?2)")
                .bind(client_id.as_str())
                .bind(i64::from(*pkid))
                .execute(&mut *conn)
                .await
                .map_err(q(path, "add inbound id"))?;
        }
        StoreOp::RemoveInbound { client_id, pkid } => {
            sqlx::query("DELETE FROM inbound WHERE client_id = ?1 AND pkid = ?2")
                .bind(client_id.as_str())
                .bind(i64::from(*pkid))
                .execute(&mut *conn)
                .await
                .map_err(q(path, "remove inbound id"))?;
        }
        StoreOp::SetRetained { msg } => {
            sqlx::query(
                "INSERT OR REPLACE INTO retained (topic, qos, payload) VALUES (?1, ?2, ?3)",
            )
            .bind(msg.topic.as_str())
            .bind(i64::from(msg.qos))
            .bind(msg.payload.as_ref())
            .execute(&mut *conn)
            .await
            .map_err(q(path, "set retained"))?;
        }
        StoreOp::ClearRetained { topic } => {
            sqlx::query("DELETE FROM retained WHERE topic = ?1")
                .bind(topic.as_str())
                .execute(&mut *conn)
                .await
                .map_err(q(path, "clear retained"))?;
        }
    }
    Ok(())
}

/// One subscription written on its own (a SUBSCRIBE costs that row, not a
/// rewrite of the session's whole set): the QoS of an existing filter
/// updated, or a new row after the session's last.
async fn subscribe(
    conn: &mut SqliteConnection,
    path: &std::path::Path,
    client_id: &str,
    filter: &str,
    qos: u8,
) -> Result<(), StoreError> {
    let op = "subscribe";
    sqlx::query("INSERT OR IGNORE INTO sessions (client_id) VALUES (?1)")
        .bind(client_id)
        .execute(&mut *conn)
        .await
        .map_err(q(path, op))?;
    let updated =
        sqlx::query("UPDATE subscriptions SET qos = ?3 WHERE client_id = ?1 AND filter = ?2")
            .bind(client_id)
            .bind(filter)
            .bind(i64::from(qos))
            .execute(&mut *conn)
            .await
            .map_err(q(path, op))?;
    if updated.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO subscriptions (client_id, pos, filter, qos) \
             SELECT ?1, coalesce(max(pos), -1) + 1, ?2, ?3 FROM subscriptions WHERE client_id = ?1",
        )
        .bind(client_id)
        .bind(filter)
        .bind(i64::from(qos))
        .execute(&mut *conn)
        .await
        .map_err(q(path, op))?;
    }
    Ok(())
}
