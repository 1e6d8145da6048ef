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
//! message to that subscriber is dropped and counted. Lock order: tree,
//! then one session at a time; never two sessions. Must not touch sockets.

mod lifecycle;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::acl::Acl;
use super::message::Message;
use super::session::{Cell, Delivery, Limits, Offer, Session};
use super::stats::{Stats, add};
use super::store::{Store, StoreOp, StoredMessage};
use super::topics::{Tree, matches};

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
    pub cell: Arc<Cell>,
    pub qos: u8,
}

impl PartialEq for Sub {
    fn eq(&self, o: &Sub) -> bool {
        Arc::ptr_eq(&self.cell, &o.cell) && self.qos == o.qos
    }
}

pub struct Router {
    pub limits: Limits,
    tree: RwLock<Tree<Sub>>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Cell>>>,
    retained: Mutex<HashMap<Arc<str>, Message>>,
    pub stats: Stats,
    pub store: Option<Store>,
    intake: RwLock<Option<Arc<dyn Intake>>>,
    pub acl: Option<Acl>,
    generation: AtomicU64,
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
            retained: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            store,
            intake: RwLock::new(None),
            acl,
            generation: AtomicU64::new(1),
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
    /// MQTT-3.8.4-3, with [`Router::retained_for`]).
    pub fn subscribe(
        &self,
        cell: &Arc<Cell>,
        filters: Vec<(String, u8)>,
        user: Option<&str>,
    ) -> (Vec<u8>, Vec<(String, u8)>) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::new();
        for (f, q) in filters {
            if let Some(acl) = &self.acl
                && !cell.lock().internal
                && !acl.can_subscribe(user, &cell.client_id, &f)
            {
                codes.push(0x80);
                continue;
            }
            codes.push(q);
            granted.push((f, q));
        }
        {
            let mut tree = self.tree_write();
            let mut s = cell.lock();
            for (f, q) in &granted {
                let sub = Sub {
                    cell: cell.clone(),
                    qos: *q,
                };
                tree.insert(f, sub, |x| Arc::ptr_eq(&x.cell, cell));
                s.subscriptions.insert(f.clone(), *q);
            }
            self.stats.subscriptions.store(tree.len() as u64, Relaxed);
            self.save_subscriptions(&s);
        }
        (codes, granted)
    }

    fn save_subscriptions(&self, s: &Session) {
        if s.persistent
            && let Some(store) = &self.store
        {
            store.push(StoreOp::SaveSession {
                client_id: s.client_id.to_string(),
                subscriptions: s
                    .subscriptions
                    .iter()
                    .map(|(f, q)| (f.clone(), *q))
                    .collect(),
            });
        }
    }

    /// Retained messages matching `granted`, for one subscriber, in topic order.
    pub fn retained_for(&self, granted: &[(String, u8)]) -> Vec<(Message, u8)> {
        let retained = lock(&self.retained);
        let mut out: Vec<(Message, u8)> = retained
            .values()
            .filter_map(|m| {
                granted
                    .iter()
                    .filter(|(f, _)| matches(f, &m.topic))
                    .map(|(_, q)| *q)
                    .max()
                    .map(|q| (m.clone(), q.min(m.qos)))
            })
            .collect();
        out.sort_by(|a, b| a.0.topic.cmp(&b.0.topic));
        out
    }

    pub fn unsubscribe(&self, cell: &Arc<Cell>, filters: &[String]) {
        let mut tree = self.tree_write();
        let mut s = cell.lock();
        for f in filters {
            tree.remove(f, |x| Arc::ptr_eq(&x.cell, cell));
            s.subscriptions.remove(f);
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
        self.save_subscriptions(&s);
    }

    /// Sets, replaces or (empty payload) clears the retained message of
    /// its topic (MQTT-3.3.1-5/10/11).
    fn retain(&self, msg: &Message) {
        let mut r = lock(&self.retained);
        let stored = if msg.payload.is_empty() {
            r.remove(&msg.topic);
            None
        } else {
            r.insert(msg.topic.clone(), msg.clone());
            Some(msg)
        };
        self.stats.retained.store(r.len() as u64, Relaxed);
        drop(r);
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
        if msg.retain {
            self.retain(&msg);
        }
        let mut targets: Vec<Sub> = Vec::new();
        {
            let tree = self.tree.read().unwrap_or_else(|e| e.into_inner());
            tree.for_each_match(&msg.topic, |s| {
                // one copy per session, at the highest matching QoS
                match targets.iter_mut().find(|t| Arc::ptr_eq(&t.cell, &s.cell)) {
                    Some(t) => t.qos = t.qos.max(s.qos),
                    None => targets.push(s.clone()),
                }
            });
        }
        let mut durable = false;
        for t in targets {
            let d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(t.qos),
                retain: false,
                seq: 0,
            };
            durable |= self.deliver(&t.cell, d).await;
        }
        match (&self.store, durable) {
            (Some(store), true) => Some(Box::pin(store.sync())),
            _ => None,
        }
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

    /// Client ids of the sessions (for the status page and tests).
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
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
