//! The writer's limits against the database itself: exact counts while
//! acknowledgements, drops and inserts interleave, rows in flight kept,
//! expiry on the run clock, commits retried (issue 13, items 3, 4, 8).

use std::time::Duration;

use super::tests::m;
use super::*;
use crate::bridge::config::Synchronous;

struct Setup {
    _dir: tempfile::TempDir,
    pool: SqlitePool,
    tx: mpsc::Sender<WriteCmd>,
    counters: Arc<Counters>,
    in_flight: InFlight,
}

async fn start(cfg: BufferConfig) -> Setup {
    let r = super::tests::running(cfg).await;
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
