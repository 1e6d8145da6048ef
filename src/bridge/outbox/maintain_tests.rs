//! The file's upkeep (`maintain.rs`): the migration of an outbox made
//! before incremental vacuum, the shrink after a drain, the dead-letter
//! bound and age.

use super::maintain::{DEAD_MAX_AGE, DEAD_MAX_ROWS, prune_dead, shrink};
use sqlx::sqlite::SqliteAutoVacuum;

use super::open::options;
use super::*;
use crate::bridge::config::Synchronous;
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
    let (w, progress) = Writer::new(conn, BufferConfig::default(), Arc::new(Counters::default()))
        .await
        .expect("writer");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(w.run(rx));
    let (cmd, done) = WriteCmd::insert_now(vec![super::tests::m(300)]);
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
