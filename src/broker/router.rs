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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::acl::Acl;
use super::message::Message;
use super::session::{Attached, Cell, Delivery, Limits, Offer, Session};
use super::stats::{Stats, add};
use super::store::{Loaded, Store, StoreOp, StoredMessage};
use super::topics::{Tree, matches};
use tokio_util::sync::CancellationToken;

mod restore;
mod retained;

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

    /// Attaches a connection to the session of `client_id` (taking it over
    /// from another connection). Returns the cell, session-present and the
    /// connection's generation.
    pub fn connect(
        &self,
        client_id: Arc<str>,
        clean: bool,
        user: Option<Arc<str>>,
        kick: CancellationToken,
    ) -> (Arc<Cell>, bool, u64) {
        let generation = self.generation.fetch_add(1, Relaxed);
        let mut sessions = lock(&self.sessions);
        let existing = sessions.get(&client_id).cloned();
        let mut present = false;
        let cell = match existing {
            Some(cell) => {
                let mut s = cell.lock();
                if let Some(old) = s.attached.take() {
                    old.kick.cancel(); // MQTT-3.1.4-2
                } else {
                    self.stats.clients_disconnected.fetch_sub(1, Relaxed);
                }
                if clean || !s.persistent {
                    drop(s);
                    self.drop_session(&cell);
                    None
                } else {
                    present = true;
                    Some(cell.clone())
                }
            }
            None => None,
        };
        let cell = cell.unwrap_or_else(|| {
            let cell = Cell::new(Session::new(client_id.clone(), !clean));
            if !clean && let Some(store) = &self.store {
                store.push(StoreOp::SaveSession {
                    client_id: client_id.to_string(),
                    subscriptions: Vec::new(),
                });
            }
            sessions.insert(client_id, cell.clone());
            cell
        });
        drop(sessions);
        let mut s = cell.lock();
        s.user = user;
        s.attach(Attached { generation, kick });
        drop(s);
        self.stats.connected();
        (cell, present, generation)
    }

    /// Removes a session's subscriptions and its stored state.
    fn drop_session(&self, cell: &Arc<Cell>) {
        let (filters, persistent) = {
            let mut s = cell.lock();
            let f: Vec<String> = std::mem::take(&mut s.subscriptions).into_keys().collect();
            (f, s.persistent)
        };
        let mut tree = self.tree_write();
        for f in filters {
            tree.remove(&f, |x| Arc::ptr_eq(&x.cell, cell));
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
        drop(tree);
        if persistent && let Some(store) = &self.store {
            store.push(StoreOp::DeleteSession {
                client_id: cell.client_id.to_string(),
            });
        }
    }

    /// The connection of `generation` ended. A clean session ends with it.
    pub fn disconnect(&self, cell: &Arc<Cell>, generation: u64) {
        let mut s = cell.lock();
        if s.attached.as_ref().map(|a| a.generation) != Some(generation) {
            return; // taken over: the new connection owns the session
        }
        let dropped = s.detach();
        add(&self.stats.publish_dropped, dropped as u64);
        let persistent = s.persistent;
        drop(s);
        self.stats.clients_connected.fetch_sub(1, Relaxed);
        if persistent {
            add(&self.stats.clients_disconnected, 1);
            return;
        }
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&cell.client_id)
            .is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            sessions.remove(&cell.client_id);
        }
        drop(sessions);
        self.drop_session(cell);
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

    /// Routes `msg` to every matching session; waits (bounded) for room in
    /// full queues. The result resolves when every persistent session's
    /// copy is on disk (`None`: nothing to wait for).
    pub async fn publish(&self, msg: Message) -> Option<Durable> {
        add(&self.stats.publish_received, 1);
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
