//! Unit tests of broken files (garbage, truncated, newer schema, another
//! format, zero length) and of a commit that keeps failing.
//!
//! Must not touch anything outside their own temporary folders.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use super::super::{FILE, StoreOp};
use super::{CLOSE, add, msg, reopen, roundtrip};

/// A broken `broker.db` is set aside, an empty store opens and works.
async fn set_aside_and_fresh(dir: &Path, content: &[u8]) {
    let path = dir.join(FILE);
    std::fs::write(&path, content).expect("write");
    let (store, loaded) = reopen(dir, 10).await;
    let aside = loaded.set_aside.clone().expect("set aside");
    assert!(aside.exists(), "{aside:?}");
    assert_eq!(std::fs::read(&aside).expect("read"), content);
    let name = aside.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("broker.db.corrupt-"), "{name}");
    assert!(loaded.sessions.is_empty() && loaded.retained.is_empty());
    store.push(add("f", 1, b"fresh"));
    assert!(store.sync().await);
    store.close(CLOSE).await;
    let (_, loaded) = reopen(dir, 10).await;
    assert_eq!(loaded.set_aside, None);
    assert_eq!(loaded.sessions[0].total_rows, 1);
}

#[tokio::test]
async fn garbage_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
    set_aside_and_fresh(dir.path(), &garbage).await;
}

#[tokio::test]
async fn truncated_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = {
        let (store, _) = reopen(dir.path(), 0).await;
        for seq in 1..=2000u64 {
            store.push(add("t", seq, &[3u8; 300]));
        }
        assert!(store.sync().await);
        store.close(CLOSE).await;
        std::fs::read(dir.path().join(FILE)).expect("read")
    };
    assert!(
        !dir.path().join("broker.db-wal").exists(),
        "checkpointed at close"
    );
    set_aside_and_fresh(dir.path(), &full[..full.len() / 2]).await;
}

#[tokio::test]
async fn newer_schema_and_other_format_are_set_aside() {
    for sql in [
        "PRAGMA user_version = 99",
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY)",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&opts)
                .await
                .expect("connect");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            conn.close().await.expect("close");
        }
        let (_, loaded) = reopen(dir.path(), 10).await;
        assert!(loaded.set_aside.expect(sql).exists());
    }
}

#[tokio::test]
async fn zero_length_file_opens_empty() {
    // SQLite reads an empty file as an empty database: nothing to set aside
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FILE), b"").expect("write");
    let loaded = roundtrip(dir.path(), vec![add("z", 1, b"z")], 10, false).await;
    assert_eq!(loaded.set_aside, None);
    assert_eq!(loaded.sessions[0].messages.len(), 1);
}

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
