//! The router: the sessions by client id, the subscription tree, the
//! retained messages, and routing a message to every matching session.
//!
//! Owns the shared broker state and the rules that span sessions: client
//! id takeover (MQTT-3.1.4-2), clean_session and session-present
//! (MQTT-3.2.2-1..3), one copy per client at the highest QoS of its
//! matching subscriptions, retained messages (MQTT-3.3.1-5..11), the ACL
//! check of every delivery, the intake (a bridge's durable commit before
//! the publisher's acknowledgement), and back-pressure: a publisher waits
//! up to [`FULL_WAIT`] for room in a subscriber's queue before a QoS 0
//! message to that subscriber is dropped and counted; the limits that span
//! sessions (`max_subscriptions_per_client`, `max_retained_messages` /
//! `_bytes`, `max_store_bytes`, `max_sessions`, session expiry). Retained
//! messages for a SUBSCRIBE are matched off the lock, yielding to the
//! runtime every `MATCH_BUDGET` matches, so a SUBSCRIBE with many
//! filters over many retained messages never holds up other clients.
//! Lock order: tree, then one session at a time; never two sessions.
//! Must not touch sockets. What each child owns: its own `//!`.

mod fanout;
mod lifecycle;
mod retained;
mod subscriptions;

pub use lifecycle::Attach;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::acl::Acl;
use super::limits::Limit;
use super::message::{Message, now_ms};
use super::session::{Cell, Delivery, Limits, Offer, Session, row_bytes};
use super::stats::{Stats, add};
use super::store::Store;
use super::subscription::SubOpts;
use super::topics::Tree;
use retained::Retained;

/// How long a publisher waits for room in a subscriber's full queue.
pub const FULL_WAIT: Duration = Duration::from_millis(500);

/// A future that says whether a message was made durable.
pub type Durable = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Takes local clients' QoS 1/2 messages before they are acknowledged
/// (the bridge's outbox). `offer` returns `None` for a message it does
/// not want; otherwise a future that resolves once the message is
/// committed (or handed on): the PUBACK / PUBREC waits for it.
pub trait Intake: Send + Sync {
    fn offer(&self, msg: &Message) -> Option<Durable>;
}

#[derive(Clone, Debug)]
pub struct Sub {
    pub(super) cell: Arc<Cell>,
    pub(super) opts: SubOpts,
    /// A shared subscription's whole filter (`$share/{group}/{filter}`):
    /// the members of one share get each message once among them.
    pub(super) share: Option<Arc<str>>,
}

impl Sub {
    /// The same subscription entry: this session's, in the same share.
    pub fn same(&self, cell: &Arc<Cell>, share: &Option<Arc<str>>) -> bool {
        Arc::ptr_eq(&self.cell, cell) && self.share == *share
    }
}

impl PartialEq for Sub {
    fn eq(&self, o: &Sub) -> bool {
        self.same(&o.cell, &o.share) && self.opts == o.opts
    }
}

pub struct Router {
    pub(super) limits: Limits,
    tree: RwLock<Tree<Sub>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Cell>>>,
    retained: Mutex<Retained>,
    pub(super) stats: Stats,
    pub(super) store: Option<Store>,
    intake: RwLock<Option<Arc<dyn Intake>>>,
    pub(super) acl: Option<Acl>,
    generation: AtomicU64,
    /// Persistent sessions held (for `max_sessions`).
    persistent: AtomicUsize,
    /// The next turn in each share (round robin).
    share_turns: Mutex<HashMap<Arc<str>, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Router {
    pub fn new(limits: Limits, store: Option<Store>, acl: Option<Acl>) -> Router {
        Router {
            limits,
            tree: RwLock::new(Tree::default()),
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(Retained::default()),
            stats: Stats::default(),
            store,
            intake: RwLock::new(None),
            acl,
            generation: AtomicU64::new(1),
            persistent: AtomicUsize::new(0),
            share_turns: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_intake(&self, intake: Arc<dyn Intake>) {
        *self.intake.write().unwrap_or_else(|e| e.into_inner()) = Some(intake);
    }

    pub fn intake(&self, msg: &Message) -> Option<Durable> {
        let i = self.intake.read().unwrap_or_else(|e| e.into_inner());
        i.as_ref().and_then(|i| i.offer(msg))
    }

    fn tree_write(&self) -> std::sync::RwLockWriteGuard<'_, Tree<Sub>> {
        self.tree.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes the store ops a session produced.
    pub fn flush_ops(&self, s: &mut Session) {
        let expired = std::mem::take(&mut s.expired_delta);
        let oversize = std::mem::take(&mut s.oversize_delta);
        if expired + oversize > 0 {
            add(&self.stats.messages_expired, expired);
            add(&self.stats.publish_dropped, expired + oversize);
        }
        let delta = std::mem::take(&mut s.disk_delta);
        if delta > 0 {
            self.stats.store_bytes.fetch_add(delta as u64, Relaxed);
        } else if delta < 0 {
            let _ = self.stats.store_bytes.fetch_update(Relaxed, Relaxed, |b| {
                Some(b.saturating_sub(delta.unsigned_abs()))
            });
        }
        if s.ops.is_empty() {
            return;
        }
        match &self.store {
            Some(store) => s.ops.drain(..).for_each(|op| store.push(op)),
            None => s.ops.clear(),
        }
    }

    /// Routes `msg` to every matching session (callers count it as
    /// received: clients' and the gateway's messages, not `$SYS`); waits (bounded) for room in
    /// full queues. The result resolves when every persistent session's
    /// copy is on disk (`None`: nothing to wait for).
    pub async fn publish(&self, msg: Message) -> Option<Durable> {
        self.publish_from(msg, None).await
    }

    /// [`Router::publish`] of a client's message; a bridge connection
    /// (`no_local`) does not get its own messages back.
    pub async fn publish_from(&self, msg: Message, from: Option<&Arc<Cell>>) -> Option<Durable> {
        if msg.retain {
            self.retain(&msg);
        }
        let now = now_ms();
        if msg.expired(now) {
            return None; // MQTT-3.3.2-5: not delivered after it expired
        }
        let targets = self.targets(&msg, from);
        let mut durable = false;
        for t in targets {
            let d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(t.qos),
                retain: msg.retain && t.retain_as_published, // MQTT-3.3.1-12/13
                seq: 0,
                sub_ids: t.ids,
                share: t.share,
            };
            durable |= self.deliver(&t.cell, d).await;
        }
        match (&self.store, durable) {
            (Some(store), true) => Some(Box::pin(store.sync())),
            _ => None,
        }
    }
}

impl Router {
    /// Offers one delivery to one session, waiting up to [`FULL_WAIT`] for
    /// room; `true` when it went to the store.
    pub async fn deliver(&self, cell: &Arc<Cell>, mut d: Delivery) -> bool {
        let deadline = tokio::time::Instant::now() + FULL_WAIT;
        loop {
            let space = cell.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let congested = {
                let mut s = cell.lock();
                if let Some(acl) = &self.acl
                    && !s.internal
                    && !acl.can_read(s.user.as_deref(), &cell.client_id, &d.msg.topic)
                {
                    return false;
                }
                if s.persistent && d.qos > 0 && self.store_full(&cell.client_id, &d.msg) {
                    self.stats.limits.hit(Limit::StoreBytes, &cell.client_id);
                    add(&self.stats.publish_dropped, 1);
                    return false;
                }
                let r = s.offer(d, &self.limits);
                self.flush_ops(&mut s);
                match r {
                    Offer::Queued { durable } => {
                        drop(s);
                        cell.wake.notify_one();
                        return durable;
                    }
                    Offer::Dropped => {
                        s.seen.dropped += 1;
                        add(&self.stats.publish_dropped, 1);
                        return false;
                    }
                    Offer::SpoolFull => {
                        self.stats.limits.hit(Limit::SpoolBytes, &cell.client_id);
                        add(&self.stats.publish_dropped, 1);
                        return false;
                    }
                    Offer::Full(back) => {
                        d = back;
                        s.congested
                    }
                }
            };
            cell.wake.notify_one();
            if congested || tokio::time::timeout_at(deadline, space).await.is_err() {
                let mut s = cell.lock();
                (s.congested, s.seen.dropped) = (true, s.seen.dropped + 1);
                add(&self.stats.publish_dropped, 1);
                return false;
            }
        }
    }

    /// Whether one more row for `client_id` would take `broker.db` past
    /// `max_store_bytes` (the sessions' rows and the retained messages).
    fn store_full(&self, client_id: &str, msg: &Message) -> bool {
        if self.store.is_none() {
            return false;
        }
        let held = self.stats.store_bytes.load(Relaxed) + self.stats.retained_bytes.load(Relaxed);
        held + row_bytes(client_id, msg) > self.limits.max_store_bytes
    }

    /// Every session attached to a connection (for shutdown and flush).
    pub fn attached(&self) -> Vec<Arc<Cell>> {
        lock(&self.sessions)
            .values()
            .filter(|c| c.lock().attached.is_some())
            .cloned()
            .collect()
    }
}
