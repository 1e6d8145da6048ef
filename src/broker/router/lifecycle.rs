//! Session lifecycle in the router: restoring persistent sessions from the
//! store, attaching a connection (takeover, clean_session, session
//! present: MQTT-3.1.4-2, 3.2.2-1..3; a takeover by another user starts a
//! fresh session; `max_sessions`), detaching it, expiring persistent
//! sessions whose client has not come back within
//! `persistent_session_expiry`, and dropping a session with its
//! subscriptions and stored rows. Must not touch sockets.
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio_util::sync::CancellationToken;

use super::{Router, Sub, lock};
use crate::broker::limits::Limit;
use crate::broker::message::Message;
use crate::broker::session::{Attached, Cell, Session};
use crate::broker::stats::add;
use crate::broker::store::{Loaded, StoreOp};

/// Who attaches to a session (from the CONNECT and the login).
pub struct Attach {
    pub client_id: Arc<str>,
    pub clean: bool,
    pub user: Option<Arc<str>>,
    /// A bridge: its own messages are not sent back to it.
    pub no_local: bool,
    pub kick: CancellationToken,
}

impl Router {
    /// Loads persistent sessions and retained messages from the store.
    pub fn restore(&self, loaded: Loaded) {
        let mut retained = lock(&self.retained);
        for m in loaded.retained {
            let topic: Arc<str> = m.topic.into();
            retained.insert(Message::new(topic, m.payload, m.qos, true));
        }
        self.stats
            .retained
            .store(retained.map.len() as u64, Relaxed);
        self.stats.retained_bytes.store(retained.bytes, Relaxed);
        drop(retained);
        let mut sessions = lock(&self.sessions);
        let mut tree = self.tree_write();
        for st in loaded.sessions {
            let id: Arc<str> = st.client_id.into();
            let mut s = Session::new(id.clone(), true);
            s.restore(st.messages, st.total_rows, st.total_bytes);
            s.inbound.extend(st.inbound_qos2);
            let subs = st.subscriptions;
            for (f, q) in &subs {
                s.subscriptions.insert(f.clone(), *q);
            }
            self.flush_ops(&mut s);
            self.persistent.fetch_add(1, Relaxed);
            let cell = Cell::new(s);
            for (f, q) in subs {
                let sub = Sub {
                    cell: cell.clone(),
                    qos: q,
                };
                tree.insert(&f, sub, |x| Arc::ptr_eq(&x.cell, &cell));
            }
            sessions.insert(id, cell);
            add(&self.stats.clients_disconnected, 1);
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
    }

    /// Attaches a connection to the session of `client_id` (taking it over
    /// from another connection). Returns the cell, session-present and the
    /// connection's generation; `None` when a new persistent session would
    /// pass `max_sessions` (CONNACK 3).
    pub fn connect(&self, c: Attach) -> Option<(Arc<Cell>, bool, u64)> {
        let generation = self.generation.fetch_add(1, Relaxed);
        let mut sessions = lock(&self.sessions);
        let mut present = false;
        let existing = sessions.get(&c.client_id).cloned();
        let kept = existing.and_then(|cell| {
            let mut s = cell.lock();
            if let Some(old) = s.attached.take() {
                old.kick.cancel(); // MQTT-3.1.4-2
            } else {
                self.stats.clients_disconnected.fetch_sub(1, Relaxed);
            }
            // a session whose last login was another user is not handed over
            let other_user = s.user.is_some() && s.user != c.user;
            if c.clean || !s.persistent || other_user {
                drop(s);
                self.drop_session(&cell);
                None
            } else {
                present = true;
                Some(cell.clone())
            }
        });
        let cell = match kept {
            Some(cell) => cell,
            None => {
                if !c.clean && self.persistent.load(Relaxed) >= self.limits.max_sessions {
                    sessions.remove(&c.client_id);
                    self.stats.limits.hit(Limit::Sessions, &c.client_id);
                    return None;
                }
                let cell = Cell::new(Session::new(c.client_id.clone(), !c.clean));
                if !c.clean {
                    self.persistent.fetch_add(1, Relaxed);
                    if let Some(store) = &self.store {
                        store.push(StoreOp::SaveSession {
                            client_id: c.client_id.to_string(),
                            subscriptions: Vec::new(),
                        });
                    }
                }
                sessions.insert(c.client_id, cell.clone());
                cell
            }
        };
        drop(sessions);
        let mut s = cell.lock();
        s.user = c.user;
        s.no_local = c.no_local;
        s.attach(Attached {
            generation,
            kick: c.kick,
        });
        drop(s);
        self.stats.connected();
        Some((cell, present, generation))
    }

    /// Removes the persistent sessions whose client has been away longer
    /// than `persistent_session_expiry`, from memory and from disk;
    /// returns how many.
    pub fn expire_sessions(&self, now: std::time::Instant) -> usize {
        let expiry = self.limits.session_expiry;
        let mut sessions = lock(&self.sessions);
        let expired: Vec<Arc<Cell>> = sessions
            .values()
            .filter(|cell| {
                let s = cell.lock();
                s.attached.is_none()
                    && s.detached_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= expiry)
            })
            .cloned()
            .collect();
        for cell in &expired {
            sessions.remove(&cell.client_id);
        }
        drop(sessions);
        for cell in &expired {
            self.stats.clients_disconnected.fetch_sub(1, Relaxed);
            self.drop_session(cell);
        }
        expired.len()
    }

    /// Removes a session's subscriptions and its stored state.
    fn drop_session(&self, cell: &Arc<Cell>) {
        let (filters, persistent) = {
            let mut s = cell.lock();
            let f: Vec<String> = std::mem::take(&mut s.subscriptions).into_keys().collect();
            let stored = s.disk_bytes() as i64;
            s.disk_delta -= stored;
            self.flush_ops(&mut s);
            (f, s.persistent)
        };
        if persistent {
            self.persistent.fetch_sub(1, Relaxed);
        }
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
}
