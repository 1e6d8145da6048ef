//! Session lifecycle in the router: restoring persistent sessions from the
//! store, attaching a connection (takeover, clean_session, session
//! present: MQTT-3.1.4-2, 3.2.2-1..3), detaching it, and dropping a
//! session with its subscriptions. Must not touch sockets.
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio_util::sync::CancellationToken;

use super::{Router, Sub, lock};
use crate::broker::message::Message;
use crate::broker::session::{Attached, Cell, Session};
use crate::broker::stats::add;
use crate::broker::store::{Loaded, StoreOp};

impl Router {
    /// Loads persistent sessions and retained messages from the store.
    pub fn restore(&self, loaded: Loaded) {
        let mut retained = lock(&self.retained);
        for m in loaded.retained {
            let topic: Arc<str> = m.topic.into();
            retained.insert(topic.clone(), Message::new(topic, m.payload, m.qos, true));
        }
        self.stats.retained.store(retained.len() as u64, Relaxed);
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
}
