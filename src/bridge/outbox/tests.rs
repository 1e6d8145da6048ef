use super::delete::runs;
use super::*;
use crate::bridge::config::Synchronous;
use crate::config::ByteSize;

pub(super) fn m(i: usize) -> NewMessage {
    NewMessage {
        topic: "t".into(),
        payload: bytes::Bytes::from(format!("{i:09}")),
        qos: 1,
        retain: false,
        expiry_s: 0,
        props: None,
    }
}

/// A running writer on a fresh outbox in a temporary folder.
pub(super) struct Running {
    pub dir: tempfile::TempDir,
    pub pool: SqlitePool,
    pub tx: mpsc::Sender<WriteCmd>,
    pub counters: Arc<Counters>,
    pub progress: Progress,
}

pub(super) async fn running(cfg: BufferConfig) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
    let counters = Arc::new(Counters::default());
    let (w, progress) = Writer::new(conn, cfg, counters.clone())
        .await
        .expect("writer");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(w.run(rx));
    Running {
        dir,
        pool,
        tx,
        counters,
        progress,
    }
}

async fn writer(
    cfg: BufferConfig,
) -> (
    tempfile::TempDir,
    SqlitePool,
    mpsc::Sender<WriteCmd>,
    Arc<Counters>,
) {
    let r = running(cfg).await;
    (r.dir, r.pool, r.tx, r.counters)
}

/// Stores `msgs`; `true` when they were committed.
async fn insert(tx: &mpsc::Sender<WriteCmd>, msgs: Vec<NewMessage>) -> bool {
    let (done, wait) = oneshot::channel();
    tx.send(WriteCmd::Insert {
        msgs,
        done: Some(done),
        commit: Commit::Now,
    })
    .await
    .expect("send");
    wait.await.expect("reply")
}

#[test]
fn acks_become_runs_and_singles() {
    assert_eq!(
        runs(&[7, 3, 4, 5, 9, 10, 12, 4]),
        (vec![(3, 5), (9, 10)], vec![7, 12])
    );
    assert_eq!(runs(&[]), (vec![], vec![]));
}

#[tokio::test]
async fn acked_rows_are_deleted_and_ids_keep_growing() {
    let (_d, pool, tx, counters) = writer(BufferConfig::default()).await;
    assert!(insert(&tx, (0..10).map(m).collect()).await);
    let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
    assert_eq!(rows.len(), 10);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let acked = rows.iter().map(|r| (r.id, r.size as u64)).collect();
    tx.send(WriteCmd::Ack(acked)).await.expect("ack");
    insert(&tx, vec![m(10)]).await;
    let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].id > ids[9], "ids are never reused");
    assert_eq!(counters.depth.load(Relaxed), 1);
    assert_eq!(stats(&pool).await.expect("stats").messages, 1);
}

#[tokio::test]
async fn deletes_only_keep_the_counts_right_and_full_sync() {
    let (_d, pool, tx, counters) = writer(BufferConfig::default()).await;
    insert(&tx, (0..20).map(m).collect()).await;
    let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
    let acked = |rs: &[Stored]| rs.iter().map(|r| (r.id, r.size as u64)).collect();
    // a run, a lone id, and an id acknowledged twice
    let mut first: Vec<Acked> = acked(&rows[0..5]);
    first.push((rows[9].id, rows[9].size as u64));
    tx.send(WriteCmd::Ack(first)).await.expect("ack");
    tx.send(WriteCmd::Ack(acked(&rows[4..6])))
        .await
        .expect("ack");
    // the next insert waits for the deletes before it
    insert(&tx, vec![m(20)]).await;
    let s = stats(&pool).await.expect("stats");
    assert_eq!(s.messages, 20 - 7 + 1);
    assert_eq!(counters.depth.load(Relaxed), s.messages);
    assert_eq!(counters.depth_bytes.load(Relaxed), s.bytes);
}

#[tokio::test]
async fn a_deletes_only_commit_leaves_synchronous_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
    let counters = Arc::new(Counters::default());
    let (mut w, _) = Writer::new(conn, BufferConfig::default(), counters)
        .await
        .expect("writer");
    let mut batch = vec![WriteCmd::Insert {
        msgs: (0..3).map(m).collect(),
        done: None,
        commit: Commit::Now,
    }];
    w.acct.commit(&mut w.conn, &mut batch).await;
    let rows = fetch(&pool, 0, i64::MAX, 10).await.expect("fetch");
    let acks: Vec<Acked> = rows.iter().map(|r| (r.id, r.size as u64)).collect();
    w.acct
        .delete_only(&mut w.conn, &acks)
        .await
        .expect("delete");
    assert_eq!(w.acct.messages, 0);
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut w.conn)
        .await
        .expect("pragma")
        .get(0);
    assert_eq!(sync, 2, "synchronous is FULL again");
}

#[tokio::test]
async fn a_failed_commit_goes_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
    let counters = Arc::new(Counters::default());
    let (w, _) = Writer::new(conn, BufferConfig::default(), counters.clone())
        .await
        .expect("writer");
    let (live_tx, mut live_rx) = mpsc::channel(8);
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(w.with_live(live_tx).run(rx));
    // an I/O error stand-in: the table is gone under the writer
    sqlx::query("DROP TABLE outbox")
        .execute(&pool)
        .await
        .expect("drop");
    tx.send(WriteCmd::Insert {
        msgs: (0..2).map(m).collect(),
        done: None,
        commit: Commit::Now,
    })
    .await
    .expect("send");
    for i in 0..2 {
        let p = live_rx.recv().await.expect("sent live");
        assert_eq!(p.payload, m(i).payload);
    }
    // every try failed and was counted before the messages went live
    assert_eq!(counters.io_errors.load(Relaxed), COMMIT_TRIES as u64);
    // ... and the disk problem is there for /healthz until a commit succeeds
    let problem = counters.disk_problem.lock().expect("lock").clone();
    assert!(
        problem
            .as_deref()
            .is_some_and(|p| p.starts_with("outbox disk failing")),
        "{problem:?}"
    );
    sqlx::query(SCHEMA)
        .execute(&pool)
        .await
        .expect("table back");
    assert!(insert(&tx, vec![m(2)]).await);
    assert_eq!(*counters.disk_problem.lock().expect("lock"), None);
    drop(tx);
    task.await.expect("writer keeps going and ends cleanly");
}

#[tokio::test]
async fn max_bytes_drop_oldest() {
    let cfg = BufferConfig {
        max_bytes: ByteSize(10 * 10), // ten rows of 1 + 9 bytes
        ..BufferConfig::default()
    };
    let (_d, pool, tx, counters) = writer(cfg).await;
    insert(&tx, (0..25).map(m).collect()).await;
    let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
    let kept: Vec<String> = rows
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(kept.first().map(String::as_str), Some("000000015"));
    assert_eq!(kept.len(), 10);
    assert_eq!(counters.dropped_oldest.load(Relaxed), 15);
    assert_eq!(counters.depth_bytes.load(Relaxed), 100);
}
