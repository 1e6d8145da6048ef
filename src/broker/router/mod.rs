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
//! runtime every [`MATCH_BUDGET`] matches, so a SUBSCRIBE with many
//! filters over many retained messages never holds up other clients.
//! Lock order: tree, then one session at a time; never two sessions.
//! Must not touch sockets.

mod lifecycle;

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
use super::store::{Store, StoreOp, StoredMessage};
use super::subscription::SubOpts;
use super::topics::{Tree, matches};

/// How long a publisher waits for room in a subscriber's full queue.
pub const FULL_WAIT: Duration = Duration::from_millis(500);
/// Filter-against-topic matches between two yields while the retained
/// messages for a SUBSCRIBE are looked up (about a millisecond of work).
pub const MATCH_BUDGET: usize = 20_000;
/// SUBACK return code of a refused filter (MQTT-3.9.3).
const SUBACK_FAILURE: u8 = 0x80;

/// The retained messages; `count` and `bytes` (topic + payload) cover the
/// clients' and the gateway's, not the broker's own `$SYS` figures.
#[derive(Default)]
struct Retained {
    map: HashMap<Arc<str>, Message>,
    count: usize,
    bytes: u64,
}

impl Retained {
    fn counted(topic: &str) -> bool {
        !topic.starts_with("$SYS/")
    }

    fn insert(&mut self, msg: Message) {
        self.remove(&msg.topic);
        if Self::counted(&msg.topic) {
            self.count += 1;
            self.bytes += msg.size() as u64;
        }
        self.map.insert(msg.topic.clone(), msg);
    }

    fn remove(&mut self, topic: &str) -> Option<Message> {
        let old = self.map.remove(topic)?;
        if Self::counted(topic) {
            self.count -= 1;
            self.bytes = self.bytes.saturating_sub(old.size() as u64);
        }
        Some(old)
    }
}

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
    pub cell: Arc<Cell>,
    pub opts: SubOpts,
}

impl PartialEq for Sub {
    fn eq(&self, o: &Sub) -> bool {
        Arc::ptr_eq(&self.cell, &o.cell) && self.opts == o.opts
    }
}

/// One session's copy of a message: the matching subscriptions folded
/// (MQTT-3.3.5-1: one copy at the highest QoS, every identifier).
struct Target {
    cell: Arc<Cell>,
    qos: u8,
    retain_as_published: bool,
    ids: Vec<u32>,
}

pub struct Router {
    pub limits: Limits,
    tree: RwLock<Tree<Sub>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Cell>>>,
    retained: Mutex<Retained>,
    pub stats: Stats,
    pub store: Option<Store>,
    intake: RwLock<Option<Arc<dyn Intake>>>,
    pub acl: Option<Acl>,
    generation: AtomicU64,
    /// Persistent sessions held (for `max_sessions`).
    persistent: AtomicUsize,
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

    /// Adds subscriptions; returns the SUBACK codes and the granted
    /// filters (whose retained messages the caller then delivers,
    /// MQTT-3.8.4-3, with [`Router::retained_for`]). A filter the ACL
    /// denies, or a new one past `max_subscriptions_per_client`, gets 0x80.
    /// A persistent session stores each granted filter on its own.
    pub fn subscribe(
        &self,
        cell: &Arc<Cell>,
        filters: Vec<(String, SubOpts)>,
        user: Option<&str>,
    ) -> (Vec<u8>, Vec<(String, SubOpts)>) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted: Vec<(String, SubOpts)> = Vec::new();
        {
            let s = cell.lock();
            let mut held = s.subscriptions.len();
            for (f, q) in filters {
                if let Some(acl) = &self.acl
                    && !s.internal
                    && !acl.can_subscribe(user, &cell.client_id, &f)
                {
                    codes.push(SUBACK_FAILURE);
                    continue;
                }
                let new =
                    !s.subscriptions.contains_key(&f) && !granted.iter().any(|(g, _)| *g == f);
                if new && held >= self.limits.max_subscriptions {
                    self.stats.limits.hit(Limit::Subscriptions, &cell.client_id);
                    codes.push(SUBACK_FAILURE);
                    continue;
                }
                held += usize::from(new);
                codes.push(q.qos);
                match granted.iter_mut().find(|(g, _)| *g == f) {
                    Some(g) => g.1 = q,
                    None => granted.push((f, q)),
                }
            }
        }
        let mut tree = self.tree_write();
        let mut s = cell.lock();
        for (f, q) in &granted {
            let sub = Sub {
                cell: cell.clone(),
                opts: *q,
            };
            tree.insert(f, sub, |x| Arc::ptr_eq(&x.cell, cell));
            s.subscriptions.insert(f.clone(), *q);
            self.store_subscription(
                &s,
                StoreOp::Subscribe {
                    client_id: s.client_id.to_string(),
                    filter: f.clone(),
                    qos: q.to_byte(),
                },
            );
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
        (codes, granted)
    }

    fn store_subscription(&self, s: &Session, op: StoreOp) {
        if s.persistent
            && let Some(store) = &self.store
        {
            store.push(op);
        }
    }

    /// Retained messages matching `granted`, for one subscriber, in topic
    /// order, each once at the highest granted QoS. Filters without
    /// wildcards are looked up; the others are matched against a copy of
    /// the retained set taken under the lock, yielding every
    /// [`MATCH_BUDGET`] matches.
    pub async fn retained_for(&self, granted: &[(String, SubOpts)]) -> Vec<(Message, u8)> {
        let (wild, exact): (Vec<_>, Vec<_>) =
            granted.iter().partition(|(f, _)| f.contains(['+', '#']));
        let mut out: Vec<(Message, u8)> = Vec::new();
        let all: Vec<Message> = {
            let r = lock(&self.retained);
            for (f, o) in &exact {
                if let Some(m) = r.map.get(f.as_str()) {
                    out.push((m.clone(), o.qos.min(m.qos)));
                }
            }
            match wild.is_empty() {
                true => Vec::new(),
                false => r.map.values().cloned().collect(),
            }
        };
        let mut work = 0;
        for m in all {
            let best = wild
                .iter()
                .filter(|(f, _)| matches(f, &m.topic))
                .map(|(_, o)| o.qos)
                .max();
            if let Some(q) = best {
                let q = q.min(m.qos);
                out.push((m, q));
            }
            work += wild.len();
            if work >= MATCH_BUDGET {
                work = 0;
                tokio::task::yield_now().await;
            }
        }
        out.sort_by(|a, b| a.0.topic.cmp(&b.0.topic).then(b.1.cmp(&a.1)));
        out.dedup_by(|later, kept| later.0.topic == kept.0.topic);
        out
    }

    pub fn unsubscribe(&self, cell: &Arc<Cell>, filters: &[String]) {
        let mut tree = self.tree_write();
        let mut s = cell.lock();
        for f in filters {
            tree.remove(f, |x| Arc::ptr_eq(&x.cell, cell));
            if s.subscriptions.remove(f).is_some() {
                self.store_subscription(
                    &s,
                    StoreOp::Unsubscribe {
                        client_id: s.client_id.to_string(),
                        filter: f.clone(),
                    },
                );
            }
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
    }

    /// Sets, replaces or (empty payload) clears the retained message of
    /// its topic (MQTT-3.3.1-5/10/11). A new message past
    /// `max_retained_messages` or `max_retained_bytes` is not retained (an
    /// older one of its topic is cleared: never a stale value) and counted.
    fn retain(&self, msg: &Message) {
        let mut r = lock(&self.retained);
        let old = r.remove(&msg.topic);
        let fits = !Retained::counted(&msg.topic)
            || (r.count < self.limits.max_retained_messages
                && r.bytes + msg.size() as u64 <= self.limits.max_retained_bytes);
        let stored = if msg.payload.is_empty() {
            None
        } else if fits {
            r.insert(msg.clone());
            Some(msg)
        } else {
            self.stats.limits.hit(Limit::Retained, &msg.topic);
            None
        };
        self.stats.retained.store(r.map.len() as u64, Relaxed);
        self.stats.retained_bytes.store(r.bytes, Relaxed);
        drop(r);
        if stored.is_none() && old.is_none() {
            return;
        }
        if let Some(store) = &self.store
            && !msg.topic.starts_with('$')
        {
            store.push(match stored {
                Some(m) => StoreOp::SetRetained {
                    msg: StoredMessage {
                        topic: m.topic.to_string(),
                        payload: m.payload.clone(),
                        qos: m.qos,
                        retain: true,
                    },
                },
                None => StoreOp::ClearRetained {
                    topic: msg.topic.to_string(),
                },
            });
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
            };
            durable |= self.deliver(&t.cell, d).await;
        }
        match (&self.store, durable) {
            (Some(store), true) => Some(Box::pin(store.sync())),
            _ => None,
        }
    }

    /// The sessions `msg` goes to, each once (MQTT-3.3.5-1), without the
    /// publisher's own no-local subscriptions (MQTT-3.8.3-3; a bridge's
    /// session is no-local as a whole).
    fn targets(&self, msg: &Message, from: Option<&Arc<Cell>>) -> Vec<Target> {
        let bridge = from.is_some_and(|c| c.lock().no_local);
        let mut targets: Vec<Target> = Vec::new();
        let tree = self.tree.read().unwrap_or_else(|e| e.into_inner());
        tree.for_each_match(&msg.topic, |s| {
            let own = from.is_some_and(|c| Arc::ptr_eq(c, &s.cell));
            if own && (bridge || s.opts.no_local) {
                return;
            }
            let at = match targets.iter().position(|t| Arc::ptr_eq(&t.cell, &s.cell)) {
                Some(at) => at,
                None => {
                    targets.push(Target {
                        cell: s.cell.clone(),
                        qos: 0,
                        retain_as_published: false,
                        ids: Vec::new(),
                    });
                    targets.len() - 1
                }
            };
            let t = &mut targets[at];
            t.qos = t.qos.max(s.opts.qos);
            t.retain_as_published |= s.opts.retain_as_published;
            t.ids.extend(s.opts.id);
        });
        targets
    }

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
                cell.lock().congested = true;
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
