//! The statements of each op: how one coalesced batch becomes SQL inside
//! the writer's transaction (a run of `Add`s in multi-row INSERTs, a run
//! of `RemoveMessage`s of consecutive seqs in one DELETE, every other op
//! its own statements).
//!
//! Owns every statement that changes rows. Must not begin, commit or retry
//! (the writer does) and must not read for callers.

use std::path::Path;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

use super::coalesce::Op;
use super::read::{encode_ids, encode_state};
use super::{OutState, StoreError, StoreOp, StoredMessage, StoredSub, q};

/// Rows per multi-row INSERT; a run is cut into these sizes so SQLite's
/// statement cache holds four INSERTs, not one per run length.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Applies a coalesced batch, in order.
pub(super) async fn batch(
    conn: &mut SqliteConnection,
    path: &Path,
    ops: &[Op],
) -> Result<(), StoreError> {
    let mut i = 0;
    while i < ops.len() {
        let mut j = i + 1;
        match &ops[i] {
            Op::Add { .. } => {
                while j < ops.len() && matches!(ops[j], Op::Add { .. }) {
                    j += 1;
                }
                insert(conn, path, &ops[i..j]).await?;
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
                run(
                    conn,
                    path,
                    "remove message",
                    remove_range(client_id, *seq, hi),
                )
                .await?;
            }
            Op::Other(op) => apply(conn, path, op).await?,
        }
        i = j;
    }
    Ok(())
}

/// Inserts a run of `Add`s, in multi-row statements.
async fn insert(conn: &mut SqliteConnection, path: &Path, adds: &[Op]) -> Result<(), StoreError> {
    let mut rest = adds;
    while !rest.is_empty() {
        let n = CHUNKS.into_iter().find(|&c| c <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let sql = format!(
            "INSERT OR REPLACE INTO messages (client_id, seq, state, pkid, qos, retain, size, \
             topic, payload, expires_ms, props, sub_ids) VALUES {}",
            vec!["(?,?,?,?,?,?,?,?,?,?,?,?)"; n].join(",")
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
                    .bind(msg.payload.as_ref())
                    .bind(msg.expires_ms.map(|v| v as i64))
                    .bind(msg.props.as_deref())
                    .bind(encode_ids(&msg.sub_ids));
            }
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(q(path, "add message"))?;
    }
    Ok(())
}

/// A statement with its values bound.
type Statement<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Runs `stmt`; errors name `op`. Returns the rows it changed.
async fn run(
    conn: &mut SqliteConnection,
    path: &Path,
    op: &'static str,
    stmt: Statement<'_>,
) -> Result<u64, StoreError> {
    stmt.execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(q(path, op))
}

/// Runs `sql` bound to `client_id` alone.
async fn for_client(
    conn: &mut SqliteConnection,
    path: &Path,
    op: &'static str,
    sql: &'static str,
    client_id: &str,
) -> Result<(), StoreError> {
    run(conn, path, op, sqlx::query(sql).bind(client_id))
        .await
        .map(drop)
}

/// Applies one op other than a run of `Add`s or `RemoveMessage`s.
async fn apply(conn: &mut SqliteConnection, path: &Path, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::SaveSession {
            client_id,
            subscriptions,
        } => save_session(conn, path, client_id, subscriptions).await,
        StoreOp::Subscribe { client_id, sub } => subscribe(conn, path, client_id, sub).await,
        StoreOp::DeleteSession { client_id } => delete_session(conn, path, client_id).await,
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
            insert(conn, path, std::slice::from_ref(&add)).await
        }
        _ => match single_statement(op) {
            Some((what, stmt)) => run(conn, path, what, stmt).await.map(drop),
            None => Ok(()),
        },
    }
}

/// The one statement of an op that is one statement, and what it does.
fn single_statement(op: &StoreOp) -> Option<(&'static str, Statement<'_>)> {
    Some(match op {
        StoreOp::Unsubscribe { client_id, filter } => (
            "unsubscribe",
            sqlx::query("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")
                .bind(client_id.as_str())
                .bind(filter.as_str()),
        ),
        StoreOp::SetClock { client_id, clock } => (
            "set session clock",
            sqlx::query(
                "INSERT INTO sessions (client_id, expiry_s, gone_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (client_id) DO UPDATE SET expiry_s = ?2, gone_ms = ?3",
            )
            .bind(client_id.as_str())
            .bind(clock.expiry_s.map(i64::from))
            .bind(clock.gone_ms.map(|v| v as i64)),
        ),
        StoreOp::SetState {
            client_id,
            seq,
            state,
        } => {
            let (state, pkid) = encode_state(*state);
            (
                "set state",
                sqlx::query(
                    "UPDATE messages SET state = ?1, pkid = ?2 WHERE client_id = ?3 AND seq = ?4",
                )
                .bind(state)
                .bind(pkid)
                .bind(client_id.as_str())
                .bind(*seq as i64),
            )
        }
        StoreOp::RemoveMessage { client_id, seq } => {
            ("remove message", remove_range(client_id, *seq, *seq))
        }
        StoreOp::AddInbound { client_id, pkid } => (
            "add inbound id",
            sqlx::query("INSERT OR IGNORE INTO inbound (client_id, pkid) VALUES (?1, ?2)")
                .bind(client_id.as_str())
                .bind(i64::from(*pkid)),
        ),
        StoreOp::RemoveInbound { client_id, pkid } => (
            "remove inbound id",
            sqlx::query("DELETE FROM inbound WHERE client_id = ?1 AND pkid = ?2")
                .bind(client_id.as_str())
                .bind(i64::from(*pkid)),
        ),
        StoreOp::SetRetained { msg } => ("set retained", set_retained(msg)),
        StoreOp::ClearRetained { topic } => (
            "clear retained",
            sqlx::query("DELETE FROM retained WHERE topic = ?1").bind(topic.as_str()),
        ),
        StoreOp::SaveSession { .. }
        | StoreOp::Subscribe { .. }
        | StoreOp::DeleteSession { .. }
        | StoreOp::AddMessage { .. } => return None,
    })
}

/// Deletes the rows of seqs `lo..=hi`.
fn remove_range(client_id: &str, lo: u64, hi: u64) -> Statement<'_> {
    sqlx::query("DELETE FROM messages WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3")
        .bind(client_id)
        .bind(lo as i64)
        .bind(hi as i64)
}

fn set_retained(msg: &StoredMessage) -> Statement<'_> {
    sqlx::query(
        "INSERT OR REPLACE INTO retained (topic, qos, payload, expires_ms, props) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(msg.topic.as_str())
    .bind(i64::from(msg.qos))
    .bind(msg.payload.as_ref())
    .bind(msg.expires_ms.map(|v| v as i64))
    .bind(msg.props.as_deref())
}

/// The session row, its subscription set replaced.
async fn save_session(
    conn: &mut SqliteConnection,
    path: &Path,
    client_id: &str,
    subscriptions: &[StoredSub],
) -> Result<(), StoreError> {
    let op = "save session";
    for_client(conn, path, op, ENSURE_SESSION, client_id).await?;
    for_client(
        conn,
        path,
        op,
        "DELETE FROM subscriptions WHERE client_id = ?1",
        client_id,
    )
    .await?;
    for (pos, sub) in subscriptions.iter().enumerate() {
        run(
            conn,
            path,
            op,
            sqlx::query(
                "INSERT INTO subscriptions (client_id, pos, filter, qos, sub_id) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(client_id)
            .bind(pos as i64)
            .bind(sub.filter.as_str())
            .bind(i64::from(sub.opts))
            .bind(sub.id.map(i64::from)),
        )
        .await?;
    }
    Ok(())
}

const ENSURE_SESSION: &str = "INSERT OR IGNORE INTO sessions (client_id) VALUES (?1)";

/// One subscription written on its own (a SUBSCRIBE costs that row, not a
/// rewrite of the session's whole set): the options of an existing filter
/// updated, or a new row after the session's last.
async fn subscribe(
    conn: &mut SqliteConnection,
    path: &Path,
    client_id: &str,
    sub: &StoredSub,
) -> Result<(), StoreError> {
    let op = "subscribe";
    for_client(conn, path, op, ENSURE_SESSION, client_id).await?;
    let updated = run(
        conn,
        path,
        op,
        sqlx::query(
            "UPDATE subscriptions SET qos = ?3, sub_id = ?4 WHERE client_id = ?1 AND filter = ?2",
        )
        .bind(client_id)
        .bind(sub.filter.as_str())
        .bind(i64::from(sub.opts))
        .bind(sub.id.map(i64::from)),
    )
    .await?;
    if updated == 0 {
        sqlx::query(
            "INSERT INTO subscriptions (client_id, pos, filter, qos, sub_id) \
             SELECT ?1, coalesce(max(pos), -1) + 1, ?2, ?3, ?4 FROM subscriptions \
             WHERE client_id = ?1",
        )
        .bind(client_id)
        .bind(sub.filter.as_str())
        .bind(i64::from(sub.opts))
        .bind(sub.id.map(i64::from))
        .execute(&mut *conn)
        .await
        .map_err(q(path, op))?;
    }
    Ok(())
}

/// The session and everything of it.
async fn delete_session(
    conn: &mut SqliteConnection,
    path: &Path,
    client_id: &str,
) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM sessions WHERE client_id = ?1",
        "DELETE FROM subscriptions WHERE client_id = ?1",
        "DELETE FROM messages WHERE client_id = ?1",
        "DELETE FROM inbound WHERE client_id = ?1",
    ] {
        for_client(conn, path, "delete session", sql, client_id).await?;
    }
    Ok(())
}
