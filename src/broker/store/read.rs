//! Reading the store back: everything at open ([`load_all`]) and pages of a
//! session's queue ([`page`]).
//!
//! Owns the SELECTs and the decoding of rows. Must not write.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::{
    Loaded, OutState, QueuedRow, SessionClock, StoreError, StoredMessage, StoredSession, StoredSub,
    q,
};

// what load_all reads, one SELECT per table
const SESSIONS: &str = "SELECT client_id, expiry_s, gone_ms FROM sessions";
const SUBSCRIPTIONS: &str =
    "SELECT client_id, filter, qos, sub_id FROM subscriptions ORDER BY client_id, pos";
const INBOUND_IDS: &str = "SELECT client_id, pkid FROM inbound ORDER BY client_id, pkid";
const MESSAGE_COUNTS: &str =
    "SELECT client_id, COUNT(*), SUM(size) FROM messages GROUP BY client_id";
const RETAINED: &str = "SELECT topic, payload, qos, expires_ms, props FROM retained ORDER BY topic";

// what page reads: the sizes first when bytes are capped, then the rows
const PAGE_SIZES: &str =
    "SELECT size FROM messages WHERE client_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
const PAGE_ROWS: &str = "SELECT seq, state, pkid, qos, retain, topic, payload, \
     expires_ms, props, sub_ids FROM messages WHERE client_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// Column value of a state: `(state, pkid)`.
pub(super) fn encode_state(s: OutState) -> (i64, i64) {
    match s {
        OutState::Queued => (0, 0),
        OutState::Sent { pkid } => (1, pkid.into()),
        OutState::Released { pkid } => (2, pkid.into()),
    }
}

fn decode_state(
    path: &Path,
    op: &'static str,
    state: i64,
    pkid: i64,
) -> Result<OutState, StoreError> {
    let id = || packet_id(path, op, pkid);
    match state {
        0 => Ok(OutState::Queued),
        1 => Ok(OutState::Sent { pkid: id()? }),
        2 => Ok(OutState::Released { pkid: id()? }),
        _ => Err(bad_value(path, op, "state", state)),
    }
}

fn bad_value(path: &Path, op: &'static str, what: &'static str, value: i64) -> StoreError {
    StoreError::BadValue {
        path: path.to_path_buf(),
        op,
        what,
        value,
    }
}

fn packet_id(path: &Path, op: &'static str, v: i64) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| bad_value(path, op, "packet id", v))
}

fn small(path: &Path, op: &'static str, what: &'static str, v: i64) -> Result<u8, StoreError> {
    u8::try_from(v).map_err(|_| bad_value(path, op, what, v))
}

/// Every row of `sql` (a SELECT without parameters); errors name `op`.
async fn all_rows(
    conn: &mut SqliteConnection,
    path: &Path,
    op: &'static str,
    sql: &'static str,
) -> Result<Vec<SqliteRow>, StoreError> {
    sqlx::query(sql).fetch_all(conn).await.map_err(q(path, op))
}

/// Loads every session (its first `preload` rows) and every retained message.
pub(super) async fn load_all(
    conn: &mut SqliteConnection,
    path: &Path,
    preload: usize,
) -> Result<Loaded, StoreError> {
    let mut sessions: BTreeMap<String, StoredSession> = BTreeMap::new();
    let op = "load sessions";
    for r in all_rows(conn, path, op, SESSIONS).await? {
        let id: String = r.try_get(0).map_err(q(path, op))?;
        let expiry: Option<i64> = r.try_get(1).map_err(q(path, op))?;
        let gone: Option<i64> = r.try_get(2).map_err(q(path, op))?;
        entry(&mut sessions, id).clock = SessionClock {
            expiry_s: expiry.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            gone_ms: gone.map(|v| v.max(0) as u64),
        };
    }
    let op = "load subscriptions";
    for r in all_rows(conn, path, op, SUBSCRIPTIONS).await? {
        let id: String = r.try_get(0).map_err(q(path, op))?;
        let filter: String = r.try_get(1).map_err(q(path, op))?;
        let opts = small(path, op, "qos", r.try_get(2).map_err(q(path, op))?)?;
        let sub_id: Option<i64> = r.try_get(3).map_err(q(path, op))?;
        entry(&mut sessions, id).subscriptions.push(StoredSub {
            filter,
            opts,
            id: sub_id.and_then(|v| u32::try_from(v).ok()),
        });
    }
    let op = "load inbound ids";
    for r in all_rows(conn, path, op, INBOUND_IDS).await? {
        let id: String = r.try_get(0).map_err(q(path, op))?;
        let pkid = packet_id(path, op, r.try_get(1).map_err(q(path, op))?)?;
        entry(&mut sessions, id).inbound_qos2.push(pkid);
    }
    let op = "count messages";
    for r in all_rows(conn, path, op, MESSAGE_COUNTS).await? {
        let id: String = r.try_get(0).map_err(q(path, op))?;
        let s = entry(&mut sessions, id);
        s.total_rows = r.try_get::<i64, _>(1).map_err(q(path, op))?.max(0) as u64;
        s.total_bytes = r.try_get::<i64, _>(2).map_err(q(path, op))?.max(0) as u64;
    }
    if preload > 0 {
        for s in sessions.values_mut().filter(|s| s.total_rows > 0) {
            s.messages = page(conn, path, &s.client_id, 0, preload, usize::MAX).await?;
        }
    }
    let op = "load retained";
    let mut retained = Vec::new();
    for r in all_rows(conn, path, op, RETAINED).await? {
        retained.push(StoredMessage {
            topic: r.try_get(0).map_err(q(path, op))?,
            payload: bytes::Bytes::from(r.try_get::<Vec<u8>, _>(1).map_err(q(path, op))?),
            qos: small(path, op, "qos", r.try_get(2).map_err(q(path, op))?)?,
            retain: true,
            expires_ms: expiry_ms(path, op, &r, 3)?,
            props: props(path, op, &r, 4)?,
            sub_ids: Vec::new(),
        });
    }
    Ok(Loaded {
        sessions: sessions.into_values().collect(),
        retained,
        set_aside: None,
    })
}

fn entry(sessions: &mut BTreeMap<String, StoredSession>, id: String) -> &mut StoredSession {
    sessions.entry(id).or_insert_with_key(|id| StoredSession {
        client_id: id.clone(),
        ..StoredSession::default()
    })
}

/// Rows of `client_id` with seq > `after`, in seq order: at most `max_rows`,
/// and stopping after the row that reaches `max_bytes` (at least one row).
pub(super) async fn page(
    conn: &mut SqliteConnection,
    path: &Path,
    client_id: &str,
    after: u64,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Vec<QueuedRow>, StoreError> {
    let Ok(after) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    let mut limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let op = "load messages";
    if max_bytes != usize::MAX {
        // sizes first (no payload read), to know how many rows fit
        let sizes = page_rows(conn, path, op, PAGE_SIZES, client_id, after, limit).await?;
        let (mut n, mut bytes) = (0i64, 0u64);
        for r in &sizes {
            n += 1;
            bytes += r.try_get::<i64, _>(0).map_err(q(path, op))?.max(0) as u64;
            if bytes >= max_bytes as u64 {
                break;
            }
        }
        limit = n;
        if limit == 0 {
            return Ok(Vec::new());
        }
    }
    let rows = page_rows(conn, path, op, PAGE_ROWS, client_id, after, limit).await?;
    rows.iter().map(|r| queued_row(path, r)).collect()
}

/// Every row of `sql` for (`client_id`, seq > `after`, LIMIT `limit`).
async fn page_rows(
    conn: &mut SqliteConnection,
    path: &Path,
    op: &'static str,
    sql: &'static str,
    client_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<SqliteRow>, StoreError> {
    sqlx::query(sql)
        .bind(client_id)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
        .map_err(q(path, op))
}

fn queued_row(path: &Path, r: &SqliteRow) -> Result<QueuedRow, StoreError> {
    let op = "load messages";
    let seq: i64 = r.try_get(0).map_err(q(path, op))?;
    let state = decode_state(
        path,
        op,
        r.try_get(1).map_err(q(path, op))?,
        r.try_get(2).map_err(q(path, op))?,
    )?;
    Ok(QueuedRow {
        seq: seq.max(0) as u64,
        state,
        msg: StoredMessage {
            qos: small(path, op, "qos", r.try_get(3).map_err(q(path, op))?)?,
            retain: r.try_get::<i64, _>(4).map_err(q(path, op))? != 0,
            topic: r.try_get(5).map_err(q(path, op))?,
            payload: bytes::Bytes::from(r.try_get::<Vec<u8>, _>(6).map_err(q(path, op))?),
            expires_ms: expiry_ms(path, op, r, 7)?,
            props: props(path, op, r, 8)?,
            sub_ids: decode_ids(r.try_get::<Option<String>, _>(9).map_err(q(path, op))?),
        },
    })
}

/// An `expires_ms` column (NULL: never expires).
fn expiry_ms(
    path: &Path,
    op: &'static str,
    r: &SqliteRow,
    col: usize,
) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = r.try_get(col).map_err(q(path, op))?;
    Ok(v.map(|v| v.max(0) as u64))
}

/// A `props` column (NULL: none).
fn props(
    path: &Path,
    op: &'static str,
    r: &SqliteRow,
    col: usize,
) -> Result<Option<bytes::Bytes>, StoreError> {
    let v: Option<Vec<u8>> = r.try_get(col).map_err(q(path, op))?;
    Ok(v.map(bytes::Bytes::from))
}

/// The `sub_ids` column: identifiers joined by commas, NULL when none.
pub(super) fn encode_ids(ids: &[u32]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

/// The identifiers of a `sub_ids` column; one that does not parse is
/// left out (an identifier is an extra of the delivery, not the message).
fn decode_ids(v: Option<String>) -> Vec<u32> {
    v.map_or_else(Vec::new, |s| {
        s.split(',').filter_map(|i| i.parse().ok()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{CLOSE, add, msg, reopen};
    use super::*;

    #[tokio::test]
    async fn load_messages_pages_by_rows_and_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = reopen(dir.path(), 0).await;
        // 20 rows of 10 bytes (topic "t/x" + 7 bytes), one of another session
        for seq in 1..=20u64 {
            store.push(add("p", seq * 2, b"1234567"));
        }
        store.push(add("other", 1, b"1234567"));
        assert!(store.sync().await);
        let seqs = |rows: &[QueuedRow]| rows.iter().map(|r| r.seq).collect::<Vec<_>>();

        let rows = store
            .load_messages("p", 0, 5, usize::MAX)
            .await
            .expect("load");
        assert_eq!(seqs(&rows), vec![2, 4, 6, 8, 10]);
        let rows = store
            .load_messages("p", 10, 3, usize::MAX)
            .await
            .expect("load");
        assert_eq!(seqs(&rows), vec![12, 14, 16]);
        // after a seq that is not a row
        let rows = store
            .load_messages("p", 11, 1, usize::MAX)
            .await
            .expect("load");
        assert_eq!(seqs(&rows), vec![12]);
        // bytes: 25 bytes take the row that crosses them (3 rows)
        let rows = store.load_messages("p", 0, 100, 25).await.expect("load");
        assert_eq!(seqs(&rows), vec![2, 4, 6]);
        let rows = store.load_messages("p", 0, 100, 30).await.expect("load");
        assert_eq!(seqs(&rows), vec![2, 4, 6]);
        // at least one row
        let rows = store.load_messages("p", 0, 100, 1).await.expect("load");
        assert_eq!(seqs(&rows), vec![2]);
        let rows = store.load_messages("p", 0, 100, 0).await.expect("load");
        assert_eq!(seqs(&rows), vec![2]);
        // rows bound before bytes
        let rows = store.load_messages("p", 0, 2, 1000).await.expect("load");
        assert_eq!(seqs(&rows), vec![2, 4]);
        // the end, and past it
        let rows = store.load_messages("p", 36, 100, 1000).await.expect("load");
        assert_eq!(seqs(&rows), vec![38, 40]);
        assert!(
            store
                .load_messages("p", 40, 100, 1000)
                .await
                .expect("load")
                .is_empty()
        );
        assert!(
            store
                .load_messages("nobody", 0, 100, 1000)
                .await
                .expect("load")
                .is_empty()
        );
        assert!(
            store
                .load_messages("p", 0, 0, 1000)
                .await
                .expect("load")
                .is_empty()
        );
        assert_eq!(rows[0].msg, msg("t/x", b"1234567", 1));
        assert_eq!(rows[0].state, OutState::Queued);
        store.close(CLOSE).await;
    }
}
