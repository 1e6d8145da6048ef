//! The broker's durable state: persistent MQTT sessions (clean_session =
//! false) and retained messages, in one SQLite file `{data_dir}/broker.db`
//! (WAL, through sqlx with bundled SQLite).
//!
//! Owns that file and every SQL statement on it. Must not know about
//! connections, packets or topic matching: the broker core decides what to
//! store and pushes [`StoreOp`]s; this module only applies them in order
//! and reads them back.
//!
//! Schema (`PRAGMA user_version = 2`; a version 1 file, from before MQTT
//! 5, gains the MQTT 5 columns at open, every row kept):
//!
//! ```sql
//! CREATE TABLE sessions      (client_id TEXT PRIMARY KEY,
//!                             expiry_s INTEGER,   -- Session Expiry Interval; NULL: the cap
//!                             gone_ms INTEGER);   -- Unix ms its client left; NULL: connected
//! CREATE TABLE subscriptions (client_id TEXT NOT NULL, pos INTEGER NOT NULL,
//!                             filter TEXT NOT NULL,
//!                             qos INTEGER NOT NULL, -- the options byte: QoS, no local, RAP
//!                             sub_id INTEGER,       -- Subscription Identifier
//!                             PRIMARY KEY (client_id, pos));
//! CREATE TABLE messages      (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
//!                             state INTEGER NOT NULL,  -- 0 queued, 1 sent, 2 released
//!                             pkid INTEGER NOT NULL,   -- 0 when queued
//!                             qos INTEGER NOT NULL, retain INTEGER NOT NULL,
//!                             size INTEGER NOT NULL,   -- bytes of topic + payload
//!                             topic TEXT NOT NULL, payload BLOB NOT NULL,
//!                             expires_ms INTEGER,      -- Unix ms; NULL: never
//!                             props BLOB,              -- MQTT 5 property bytes
//!                             sub_ids TEXT);           -- identifiers, comma-separated
//! CREATE UNIQUE INDEX messages_by_seq ON messages (client_id, seq);
//! CREATE TABLE inbound       (client_id TEXT NOT NULL, pkid INTEGER NOT NULL,
//!                             PRIMARY KEY (client_id, pkid));
//! CREATE TABLE retained      (topic TEXT PRIMARY KEY, qos INTEGER NOT NULL,
//!                             payload BLOB NOT NULL, expires_ms INTEGER, props BLOB);
//! ```
//!
//! Each row of `messages` holds its own payload: a message queued for two
//! sessions is two rows (simple; costs disk for fan-out to many offline
//! sessions). `size` sits before the payload so counting bytes does not read
//! payload overflow pages. A `seq` must not be reused within a session while
//! its row exists (an `AddMessage` of an existing seq replaces the row).
//! Seqs must stay below 2^63 (stored as SQLite integers).
//!
//! A session is every client id that has a row in any table; `SaveSession`
//! creates it, `DeleteSession` removes it with its subscriptions, messages
//! and inbound ids.
//!
//! Guarantees:
//! - [`Store::push`] never blocks nor awaits; one writer task owns the
//!   write connection and applies ops in push order. Each round it takes
//!   everything pushed so far (group commit: one transaction, one WAL
//!   append, for everything pushed while the previous commit ran);
//!   within a batch an `AddMessage` whose row is removed again skips both
//!   (a `SetState` between them too, a `SetState` of a row added in the
//!   same batch is folded into the insert), a `DeleteSession` skips the
//!   client's earlier ops of the batch, and only the last retained op per
//!   topic runs;
//! - `synchronous = NORMAL` in WAL mode: a commit is in the WAL (the OS
//!   page cache) when [`Store::sync`] resolves, so a process crash
//!   (SIGKILL, panic = abort) loses nothing committed. The WAL is fsynced
//!   at checkpoints only (about every 1000 pages, ~4 MB, and at close): a
//!   power loss or kernel crash can lose the commits since the last
//!   checkpoint (messages acknowledged to publishers, subscriptions,
//!   retained changes come back as they were then; removed rows can come
//!   back: sent again, duplicates). The file itself stays consistent;
//! - a failed commit (disk full, I/O error, SQLITE_BUSY beyond the busy
//!   timeout) is retried with backoff ([`writer::ATTEMPTS`] tries), then logged at
//!   error, counted ([`Store::failed_commits`]), its sync waiters told
//!   `false`, and the batch dropped: the database keeps what was committed
//!   before; the writer goes on with the next batch;
//! - a file that is not a database of this schema (garbage, truncated,
//!   corrupt, another format, a newer `user_version`) is renamed to
//!   `broker.db.corrupt-<unix seconds>` (its `-wal` along, the `-shm`
//!   removed), logged at error, and an empty store opens. Errors that say
//!   nothing about the file (permissions, locked by another process, I/O)
//!   are returned instead: renaming a healthy file another process uses
//!   would be worse. Corruption in pages the open does not read (payloads
//!   beyond the preloaded rows) shows up later as errors of
//!   [`Store::load_messages`] or of commits;
//! - reads after open ([`Store::load_messages`]) use their own connections
//!   and run beside the writer (WAL); they see committed rows only.

mod apply;
mod coalesce;
mod open;
mod read;
mod types;
mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{debug, info, warn};

pub use types::{
    Loaded, OutState, QueuedRow, SessionClock, StoreError, StoreOp, StoredMessage, StoredSession,
    StoredSub,
};

use types::q;

/// The store's file in `data_dir`.
pub const FILE: &str = "broker.db";

/// What the writer has not committed yet, and who waits for it.
#[derive(Default)]
struct Pending {
    ops: Vec<StoreOp>,
    /// Bytes of `ops`.
    bytes: usize,
    /// Ops pushed since open; an op's number is its position in that count.
    pushed: u64,
    /// Ops whose batch is finished (committed or failed).
    done: u64,
    /// Sync waiters: resolved when `done` reaches the number.
    waiters: Vec<(u64, oneshot::Sender<bool>)>,
    /// No more pushes; the writer commits what is left and stops.
    closing: bool,
    /// The writer has stopped.
    stopped: bool,
}

/// State shared by the handles and the writer task.
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Notify,
    /// Tells [`Store::room`] that a batch finished.
    drained: Notify,
    /// Pushed, not yet committed (in `pending` or in the running commit).
    pending_bytes: std::sync::atomic::AtomicUsize,
    commits: std::sync::atomic::AtomicU64,
    failed_commits: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request_close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }
}

struct Inner {
    shared: Arc<Shared>,
    read: SqlitePool,
    path: PathBuf,
    stopped: watch::Receiver<bool>,
}

impl Drop for Inner {
    /// The last handle gone: the writer commits what is pending and stops.
    fn drop(&mut self) {
        self.shared.request_close();
    }
}

/// Handle to the broker store; clones share one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Pending bytes above which callers should wait for [`Store::room`].
    pub const HIGH_WATER: usize = 16 << 20;

    /// Opens or creates the file; loads everything needed at start (each session's first `preload` rows by seq). A file that cannot be opened or read as this schema (corrupt, wrong format, newer schema) is renamed to `broker.db.corrupt-<unix seconds>` (logged at error with both paths) and a fresh store is opened: never an error for a broken file. Errors only when even a fresh file cannot be created (StoreError). Spawns the writer task on the current tokio runtime.
    pub async fn open(data_dir: &Path, preload: usize) -> Result<(Store, Loaded), StoreError> {
        let (conn, read, loaded) = open::open(data_dir, preload).await?;
        let path = data_dir.join(FILE);
        info!(path = %path.display(), sessions = loaded.sessions.len(),
            retained = loaded.retained.len(), set_aside = loaded.set_aside.is_some(),
            "broker store open");
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            pending_bytes: Default::default(),
            commits: Default::default(),
            failed_commits: Default::default(),
        });
        let (stopped_tx, stopped) = watch::channel(false);
        let writer = writer::Writer::new(conn, shared.clone(), path.clone());
        tokio::spawn(writer.run(stopped_tx));
        let store = Store {
            inner: Arc::new(Inner {
                shared,
                read,
                path,
                stopped,
            }),
        };
        Ok((store, loaded))
    }

    /// Non-blocking, callable while holding a std Mutex (no await, no blocking): appends to the pending batch and wakes the writer. Ops are applied in push order.
    ///
    /// After [`Store::close`] the op is dropped (logged at debug).
    pub fn push(&self, op: StoreOp) {
        let shared = &self.inner.shared;
        {
            let mut p = shared.lock();
            if p.closing {
                drop(p);
                debug!(?op, "broker store closed: op dropped");
                return;
            }
            let size = op.size();
            p.ops.push(op);
            p.bytes += size;
            p.pushed += 1;
            shared.pending_bytes.fetch_add(size, Relaxed);
        }
        shared.wake.notify_one();
    }

    /// Resolves once every op pushed before this call is committed (true) or the commit failed / the store is closed (false). Call pattern: `let rx = store.sync(); ... rx.await` — so return `impl Future<Output = bool> + Send + 'static` (e.g. a oneshot receiver mapped). Must not wait for ops pushed after the call.
    ///
    /// With nothing outstanding it resolves `true` at once (a failure of an
    /// earlier batch was told to that batch's waiters), `false` once the
    /// writer has stopped.
    pub fn sync(&self) -> impl Future<Output = bool> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.inner.shared.lock();
            if p.stopped {
                let _ = tx.send(false);
            } else if p.pushed <= p.done {
                let _ = tx.send(true);
            } else {
                let upto = p.pushed;
                p.waiters.push((upto, tx));
            }
        }
        async move { rx.await.unwrap_or(false) }
    }

    /// Bytes of ops pushed and not yet committed; callers apply back-pressure above `Store::HIGH_WATER` (a pub const, e.g. 16 MiB).
    pub fn pending_bytes(&self) -> usize {
        self.inner.shared.pending_bytes.load(Relaxed)
    }

    /// Resolves when pending_bytes() < HIGH_WATER (or the writer stopped).
    pub async fn room(&self) {
        let shared = &self.inner.shared;
        loop {
            let drained = shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.pending_bytes() < Store::HIGH_WATER || shared.lock().stopped {
                return;
            }
            drained.await;
        }
    }

    /// Queued rows of a session with seq > after, in seq order, at most max_rows and about max_bytes (at least one row). Reads on a separate read connection (WAL lets it run beside the writer).
    ///
    /// "Queued rows" are the rows of the session's queue in any state
    /// (a row beyond the preloaded ones can be in flight too); each row
    /// carries its [`OutState`]. Bytes count topic + payload; the row that
    /// crosses `max_bytes` is the last one returned.
    pub async fn load_messages(
        &self,
        client_id: &str,
        after: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueuedRow>, StoreError> {
        let path = &self.inner.path;
        let mut conn = self
            .inner
            .read
            .acquire()
            .await
            .map_err(q(path, "acquire read connection"))?;
        read::page(&mut conn, path, client_id, after, max_rows, max_bytes).await
    }

    /// Commits what is pending and stops the writer (for shutdown), within `deadline`.
    ///
    /// Later pushes are dropped; later syncs resolve `false` once the
    /// writer stopped. Past the deadline the writer is left to finish on
    /// its own (logged at warn).
    pub async fn close(&self, deadline: Duration) {
        let start = tokio::time::Instant::now();
        self.inner.shared.request_close();
        let mut stopped = self.inner.stopped.clone();
        let finished = tokio::time::timeout(deadline, stopped.wait_for(|s| *s)).await;
        if finished.is_err() {
            warn!(path = %self.inner.path.display(), ?deadline,
                pending_bytes = self.pending_bytes(),
                "broker store writer did not finish within the deadline");
            return;
        }
        let left = deadline.saturating_sub(start.elapsed());
        if tokio::time::timeout(left, self.inner.read.close())
            .await
            .is_err()
        {
            warn!(path = %self.inner.path.display(), "broker store read connections did not close in time");
        }
    }

    /// Transactions committed since open.
    #[cfg(test)]
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Relaxed)
    }

    /// Batches dropped after their commit failed [`writer::ATTEMPTS`] times.
    pub fn failed_commits(&self) -> u64 {
        self.inner.shared.failed_commits.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the broker store: every op across close and reopen, group
    //! commit, sync. The helpers here are shared with the tests of `open.rs`
    //! (broken files, migration), `read.rs` (paging), `writer.rs` (a failing
    //! commit) and `coalesce.rs`.
    //!
    //! Must not touch anything outside their own temporary folders.

    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::*;

    pub(super) const CLOSE: Duration = Duration::from_secs(10);

    pub(super) fn msg(topic: &str, payload: &[u8], qos: u8) -> StoredMessage {
        StoredMessage::plain(
            topic.to_string(),
            Bytes::copy_from_slice(payload),
            qos,
            false,
        )
    }

    pub(super) fn add(client: &str, seq: u64, payload: &[u8]) -> StoreOp {
        StoreOp::AddMessage {
            client_id: client.to_string(),
            seq,
            msg: msg("t/x", payload, 1),
        }
    }

    pub(super) fn stored_sub(filter: &str, opts: u8) -> StoredSub {
        StoredSub {
            filter: filter.to_string(),
            opts,
            id: None,
        }
    }

    fn save(id: &str, subs: &[(&str, u8)]) -> StoreOp {
        StoreOp::SaveSession {
            client_id: id.into(),
            subscriptions: subs.iter().map(|(f, q)| stored_sub(f, *q)).collect(),
        }
    }

    pub(super) fn set_state(id: &str, seq: u64, state: OutState) -> StoreOp {
        StoreOp::SetState {
            client_id: id.into(),
            seq,
            state,
        }
    }

    pub(super) fn remove(id: &str, seq: u64) -> StoreOp {
        StoreOp::RemoveMessage {
            client_id: id.into(),
            seq,
        }
    }

    fn inbound(id: &str, pkid: u16, add: bool) -> StoreOp {
        let client_id = id.into();
        match add {
            true => StoreOp::AddInbound { client_id, pkid },
            false => StoreOp::RemoveInbound { client_id, pkid },
        }
    }

    fn row(seq: u64, payload: &[u8], state: OutState) -> QueuedRow {
        QueuedRow {
            seq,
            msg: msg("t/x", payload, 1),
            state,
        }
    }

    pub(super) async fn reopen(dir: &Path, preload: usize) -> (Store, Loaded) {
        Store::open(dir, preload).await.expect("open")
    }

    /// Applies `ops` (one batch, or `each` in a batch of its own), closes and
    /// reopens.
    pub(super) async fn roundtrip(
        dir: &Path,
        ops: Vec<StoreOp>,
        preload: usize,
        each: bool,
    ) -> Loaded {
        let (store, _) = reopen(dir, preload).await;
        for op in ops {
            store.push(op);
            if each {
                assert!(store.sync().await);
            }
        }
        assert!(store.sync().await);
        store.close(CLOSE).await;
        drop(store);
        reopen(dir, preload).await.1
    }

    #[tokio::test]
    async fn every_op_survives_close_and_reopen() {
        // in one batch (coalesced) and each op in a transaction of its own
        for each in [false, true] {
            every_op(each).await;
        }
    }

    async fn every_op(each: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = |s: &str| s.to_string();
        let mut retained = msg("r/a", b"ra", 1);
        retained.retain = true;
        let ops = vec![
            save("a", &[("x/#", 1), ("a/+", 2)]),
            save("a", &[("z/#", 2), ("b/c", 0)]), // replaces the set
            save("b", &[]),
            add("a", 1, b"one"),
            add("a", 2, b"two"),
            add("a", 3, b"three"),
            set_state("a", 2, OutState::Released { pkid: 7 }),
            set_state("a", 3, OutState::Sent { pkid: 65535 }),
            remove("a", 1),
            inbound("b", 9, true),
            inbound("b", 3, true),
            inbound("b", 4, true),
            inbound("b", 4, false),
            StoreOp::SetRetained {
                msg: retained.clone(),
            },
            StoreOp::SetRetained {
                msg: msg("r/b", b"rb", 0),
            },
            StoreOp::ClearRetained { topic: c("r/b") },
        ];
        let loaded = roundtrip(dir.path(), ops, 100, each).await;
        assert_eq!(loaded.set_aside, None);
        assert_eq!(
            loaded.sessions,
            vec![
                StoredSession {
                    client_id: c("a"),
                    subscriptions: vec![stored_sub("z/#", 2), stored_sub("b/c", 0)],
                    inbound_qos2: vec![],
                    clock: SessionClock::default(),
                    messages: vec![
                        row(2, b"two", OutState::Released { pkid: 7 }),
                        row(3, b"three", OutState::Sent { pkid: 65535 }),
                    ],
                    total_rows: 2,
                    total_bytes: (3 + 3) + (3 + 5),
                },
                StoredSession {
                    client_id: c("b"),
                    subscriptions: vec![],
                    inbound_qos2: vec![3, 9],
                    ..StoredSession::default()
                },
            ]
        );
        assert_eq!(loaded.retained, vec![retained]);
    }

    #[tokio::test]
    async fn group_commit_of_10000_adds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = reopen(dir.path(), 0).await;
        let before = store.commits();
        let started = Instant::now();
        for seq in 1..=10_000u64 {
            store.push(add("g", seq, &[7u8; 100]));
        }
        assert!(store.pending_bytes() > 0);
        assert!(store.sync().await);
        let elapsed = started.elapsed();
        let commits = store.commits() - before;
        println!("10000 AddMessage + sync: {elapsed:?} in {commits} commits");
        assert!(commits <= 10, "{commits} transactions");
        assert_eq!(store.pending_bytes(), 0);
        assert_eq!(store.failed_commits(), 0);
        store.close(CLOSE).await;
        let (_, loaded) = reopen(dir.path(), 5).await;
        let s = &loaded.sessions[0];
        assert_eq!(s.total_rows, 10_000);
        assert_eq!(s.total_bytes, 10_000 * 103);
        assert_eq!(s.messages.len(), 5);
        assert_eq!(s.messages[4].seq, 5);
    }

    #[tokio::test]
    async fn sync_does_not_wait_for_later_pushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = reopen(dir.path(), 0).await;
        // nothing pending: at once
        assert!(store.sync().await);
        store.push(add("s", 1, b"x"));
        let first = store.sync();
        // keep pushing while waiting: the first sync must still resolve
        let pusher = {
            let store = store.clone();
            tokio::spawn(async move {
                for seq in 2..200_000u64 {
                    store.push(add("s", seq, &[1u8; 200]));
                    if seq % 1000 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let ok = tokio::time::timeout(Duration::from_secs(30), first)
            .await
            .expect("sync waited for later pushes");
        assert!(ok);
        pusher.abort();
        let _ = pusher.await;
        let rows = store
            .load_messages("s", 0, 1, usize::MAX)
            .await
            .expect("load");
        assert_eq!(rows[0].seq, 1);
        store.close(CLOSE).await;
        assert!(!store.sync().await, "closed");
    }

    #[tokio::test]
    async fn delete_session_removes_messages_and_inbound_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        // committed first, deleted in a later batch
        let (store, _) = reopen(dir.path(), 10).await;
        for id in ["gone", "kept"] {
            store.push(save(id, &[("a/#", 1)]));
            store.push(inbound(id, 5, true));
            store.push(add(id, 1, b"m"));
        }
        assert!(store.sync().await);
        store.push(StoreOp::DeleteSession {
            client_id: "gone".into(),
        });
        // deleted within one batch, then saved again
        store.push(add("again", 1, b"m"));
        store.push(inbound("again", 5, true));
        store.push(StoreOp::DeleteSession {
            client_id: "again".into(),
        });
        store.push(save("again", &[("a/#", 1)]));
        assert!(store.sync().await);
        assert!(
            store
                .load_messages("gone", 0, 10, 1000)
                .await
                .expect("load")
                .is_empty()
        );
        store.close(CLOSE).await;
        let (_, loaded) = reopen(dir.path(), 10).await;
        let ids: Vec<_> = loaded
            .sessions
            .iter()
            .map(|s| s.client_id.as_str())
            .collect();
        assert_eq!(ids, vec!["again", "kept"]);
        let again = &loaded.sessions[0];
        assert_eq!(again.subscriptions.len(), 1);
        assert!(again.inbound_qos2.is_empty() && again.messages.is_empty());
        assert_eq!(again.total_rows, 0);
        assert_eq!(loaded.sessions[1].inbound_qos2, vec![5]);
    }

    #[tokio::test]
    async fn retained_upsert_and_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = |topic: &str, payload: &[u8], qos| {
            let mut m = msg(topic, payload, qos);
            m.retain = true;
            m
        };
        let set = |m: &StoredMessage| StoreOp::SetRetained { msg: m.clone() };
        let clear = |t: &str| StoreOp::ClearRetained { topic: t.into() };
        let (store, _) = reopen(dir.path(), 0).await;
        store.push(set(&r("a", b"1", 0)));
        store.push(set(&r("b", b"1", 0)));
        store.push(set(&r("c", b"1", 0)));
        assert!(store.sync().await);
        store.push(set(&r("a", b"2", 1))); // upsert of a committed topic
        store.push(clear("b")); // clear of a committed topic
        store.push(clear("c"));
        store.push(set(&r("c", b"3", 2))); // cleared and set again in one batch
        store.push(set(&r("d", b"4", 0)));
        store.push(clear("d")); // set and cleared in one batch
        store.push(clear("never"));
        assert!(store.sync().await);
        store.close(CLOSE).await;
        let (_, loaded) = reopen(dir.path(), 0).await;
        assert_eq!(loaded.retained, vec![r("a", b"2", 1), r("c", b"3", 2)]);
    }

    #[tokio::test]
    async fn room_and_close_after_a_burst() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = reopen(dir.path(), 0).await;
        let big = vec![0u8; 1 << 20];
        for seq in 1..=40u64 {
            store.push(add("big", seq, &big));
        }
        assert!(store.pending_bytes() >= Store::HIGH_WATER);
        tokio::time::timeout(Duration::from_secs(60), store.room())
            .await
            .expect("room");
        assert!(store.pending_bytes() < Store::HIGH_WATER);
        store.push(add("big", 41, b"last"));
        store.close(CLOSE).await;
        store.push(add("big", 42, b"dropped"));
        assert!(!store.sync().await);
        let (_, loaded) = reopen(dir.path(), 0).await;
        assert_eq!(
            loaded.sessions[0].total_rows, 41,
            "close committed the last push"
        );
    }

    #[tokio::test]
    async fn subscriptions_are_stored_one_by_one_in_their_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = |f: &str, qos: u8| StoreOp::Subscribe {
            client_id: "s".into(),
            sub: stored_sub(f, qos),
        };
        let ops = vec![
            save("s", &[]),
            sub("a/#", 1),
            sub("b/+", 0),
            sub("c", 2),
            sub("a/#", 2), // the same filter again: its QoS, its place
            StoreOp::Unsubscribe {
                client_id: "s".into(),
                filter: "b/+".into(),
            },
            sub("d", 1),
        ];
        for each in [false, true] {
            let dir = dir.path().join(format!("each-{each}"));
            let loaded = roundtrip(&dir, ops.clone(), 10, each).await;
            let s = &loaded.sessions[0];
            let subs: Vec<(&str, u8)> = s
                .subscriptions
                .iter()
                .map(|sub| (sub.filter.as_str(), sub.opts))
                .collect();
            assert_eq!(
                subs,
                [("a/#", 2), ("c", 2), ("d", 1)],
                "each op alone: {each}"
            );
        }
    }

    #[tokio::test]
    async fn mqtt5_extras_survive_close_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = msg("t/x", b"five", 1);
        m.expires_ms = Some(1_700_000_000_123);
        m.props = Some(Bytes::from_static(b"\x02\x01\x01"));
        m.sub_ids = vec![7, 268_435_455];
        let mut r = m.clone();
        r.topic = "r/t".into();
        r.retain = true;
        r.sub_ids.clear();
        let clock = SessionClock {
            expiry_s: Some(3_600),
            gone_ms: Some(1_700_000_000_000),
        };
        let ops = vec![
            save("a", &[]),
            StoreOp::Subscribe {
                client_id: "a".into(),
                sub: StoredSub {
                    filter: "t/#".into(),
                    opts: 1 | 4,
                    id: Some(42),
                },
            },
            StoreOp::SetClock {
                client_id: "a".into(),
                clock,
            },
            StoreOp::AddMessage {
                client_id: "a".into(),
                seq: 1,
                msg: m.clone(),
            },
            StoreOp::SetRetained { msg: r.clone() },
        ];
        for each in [false, true] {
            let loaded =
                roundtrip(&dir.path().join(format!("{each}")), ops.clone(), 10, each).await;
            let s = &loaded.sessions[0];
            assert_eq!(s.clock, clock);
            assert_eq!(s.subscriptions[0].id, Some(42));
            assert_eq!(s.subscriptions[0].opts, 5);
            assert_eq!(s.messages[0].msg, m);
            assert_eq!(loaded.retained, vec![r.clone()]);
        }
    }
}
