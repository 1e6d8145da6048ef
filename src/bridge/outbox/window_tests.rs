//! The commit window (`buffer.commit_window`): what gathers into one
//! commit, and what ends a window early.

use std::time::Duration;

use tokio::time::Instant;

use super::tests::m;
use super::*;
use crate::bridge::config::Synchronous;
use crate::config::TimeSpan;

/// A writer with `window` and `flush_at`; its folder, pool, sender and progress.
async fn windowed(
    window: Duration,
    flush_at: usize,
) -> (
    tempfile::TempDir,
    SqlitePool,
    mpsc::Sender<WriteCmd>,
    Progress,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, conn) = open(dir.path(), Synchronous::Full).await.expect("open");
    let cfg = BufferConfig {
        commit_window: TimeSpan(window),
        ..BufferConfig::default()
    };
    let (w, progress) = Writer::new(conn, cfg, Arc::new(Counters::default()))
        .await
        .expect("writer");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(w.with_flush_at(flush_at).run(rx));
    (dir, pool, tx, progress)
}

async fn send(tx: &mpsc::Sender<WriteCmd>, i: usize, commit: Commit) -> oneshot::Receiver<bool> {
    let (done, wait) = oneshot::channel();
    let msgs = vec![m(i)];
    tx.send(WriteCmd::Insert {
        msgs,
        done: Some(done),
        commit,
    })
    .await
    .expect("send");
    wait
}

/// The commit times of the stored rows, in id order.
async fn commit_times(pool: &SqlitePool) -> Vec<i64> {
    let rows = fetch(pool, 0, i64::MAX, 100).await.expect("fetch");
    rows.iter().map(|r| r.created_ms).collect()
}

#[tokio::test]
async fn own_inserts_within_the_window_share_one_commit_at_its_end() {
    let window = Duration::from_millis(400);
    let (_d, pool, tx, _p) = windowed(window, 500).await;
    let start = Instant::now();
    let a = send(&tx, 0, Commit::Window).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = send(&tx, 1, Commit::Window).await;
    assert!(a.await.expect("answer") && b.await.expect("answer"));
    assert!(
        start.elapsed() >= window,
        "committed before the window ended"
    );
    let times = commit_times(&pool).await;
    assert_eq!(times.len(), 2);
    assert_eq!(times[0], times[1], "two commits: {times:?}");
}

#[tokio::test]
async fn a_local_clients_insert_is_committed_at_once_with_what_gathered() {
    let (_d, pool, tx, _p) = windowed(Duration::from_secs(10), 500).await;
    let start = Instant::now();
    let own = send(&tx, 0, Commit::Window).await;
    let local = send(&tx, 1, Commit::Now).await;
    assert!(local.await.expect("answer") && own.await.expect("answer"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the local client's PUBACK waited for the window"
    );
    let times = commit_times(&pool).await;
    assert_eq!(times.len(), 2);
    assert_eq!(times[0], times[1], "two commits: {times:?}");
}

#[tokio::test]
async fn acknowledgements_wait_for_the_window_unless_they_reach_flush_at() {
    let (_d, pool, tx, mut p) = windowed(Duration::from_secs(10), 3).await;
    for i in 0..3 {
        assert!(send(&tx, i, Commit::Now).await.await.expect("answer"));
    }
    let rows = fetch(&pool, 0, i64::MAX, 100).await.expect("fetch");
    let acked: Vec<Acked> = rows.iter().map(|r| (r.id, r.size as u64)).collect();
    // two acknowledgements: below flush_at, they wait for the window
    tx.send(WriteCmd::Ack(acked[..2].to_vec()))
        .await
        .expect("ack");
    let waited = tokio::time::timeout(Duration::from_millis(300), p.deleted.changed()).await;
    assert!(waited.is_err(), "deleted before the window ended");
    // the third reaches flush_at: the window ends, all three are deleted
    let start = Instant::now();
    tx.send(WriteCmd::Ack(acked[2..].to_vec()))
        .await
        .expect("ack");
    p.deleted
        .wait_for(|n| *n == 3)
        .await
        .expect("writer running");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(commit_times(&pool).await.is_empty());
}
