//! The router at start: the persistent sessions, their subscriptions and
//! queued messages, and the retained messages loaded from the store.
//!
//! Part of `router.rs` (same state). Must not touch sockets.

use super::*;

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
}
