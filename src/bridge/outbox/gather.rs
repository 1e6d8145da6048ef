//! The commit window (`buffer.commit_window`): what one commit gathers
//! and what ends a window early (see the guarantees in `mod.rs`).
//!
//! Owns [`Writer::gather`] and its bookkeeping. Must not write.

use tokio::sync::mpsc;

use super::{Commit, MAX_BATCH, WriteCmd, Writer};

impl Writer {
    /// Gathers one commit's commands: whatever queued, then what comes
    /// within `commit_window` of `first`, unless someone waits
    /// ([`Commit::Now`]), the batch is full, or enough acknowledgements and
    /// release marks wait to hold the uplink's window back ([`Writer::flush_at`]).
    pub(super) async fn gather(
        &self,
        first: WriteCmd,
        rx: &mut mpsc::Receiver<WriteCmd>,
        batch: &mut Vec<WriteCmd>,
    ) {
        let deadline = tokio::time::Instant::now() + self.acct.cfg.commit_window.get();
        let mut load = Load::default();
        load.add(&first);
        batch.push(first);
        loop {
            while load.rows < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => {
                        load.add(&cmd);
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            // a drain (marks only) commits every `flush_at` marks; beside
            // inserts the marks wait for the window up to twice that
            let marks_at = if load.rows == 0 {
                self.flush_at
            } else {
                self.flush_at * 2
            };
            if load.now || load.rows >= MAX_BATCH || load.marks >= marks_at {
                return;
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        load.add(&cmd);
                        batch.push(cmd);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Acknowledgements and release marks that end a commit window early
    /// (twice as many beside inserts; the bridge sets a quarter of the
    /// uplink's in-flight window: a drain is not held back by the window).
    pub fn with_flush_at(mut self, marks: usize) -> Writer {
        self.flush_at = marks.max(1);
        self
    }
}

/// What a gathering batch holds (see [`Writer::gather`]).
#[derive(Default)]
struct Load {
    rows: usize,
    marks: usize,
    now: bool,
}

impl Load {
    fn add(&mut self, cmd: &WriteCmd) {
        match cmd {
            WriteCmd::Insert { msgs, commit, .. } => {
                self.rows += msgs.len();
                self.now |= *commit == Commit::Now;
            }
            WriteCmd::Ack(ids) => self.marks += ids.len(),
            WriteCmd::Release(ids) => self.marks += ids.len(),
            WriteCmd::Failed(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The commit window (`buffer.commit_window`): what gathers into one
    //! commit, and what ends a window early.

    use std::time::Duration;

    use tokio::time::Instant;

    use crate::bridge::config::Synchronous;
    use crate::bridge::outbox::tests::m;
    use crate::bridge::outbox::*;
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

    async fn send(
        tx: &mpsc::Sender<WriteCmd>,
        i: usize,
        commit: Commit,
    ) -> oneshot::Receiver<bool> {
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
}
