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
use crate::broker::persist;
use crate::broker::session::{Attached, Cell, Delivery, Peer, Session};
use crate::broker::stats::{add, dec};
use crate::broker::store::{Loaded, StoreOp};
use crate::broker::subscription::{SubOpts, tree_key};

/// Who attaches to a session (from the CONNECT and the login).
pub struct Attach {
    pub client_id: Arc<str>,
    /// Clean session (3.1.1) or Clean Start (5): a stored session is
    /// discarded.
    pub clean: bool,
    /// The session outlives the connection (3.1.1: clean session 0; 5: a
    /// Session Expiry Interval above 0).
    pub persistent: bool,
    /// How long it outlives it (capped by the caller).
    pub expiry: std::time::Duration,
    pub peer: Peer,
    pub user: Option<Arc<str>>,
    /// A bridge: its own messages are not sent back to it.
    pub no_local: bool,
    pub kick: CancellationToken,
}

impl Router {
    /// Loads persistent sessions and retained messages from the store.
    pub fn restore(&self, loaded: Loaded) {
        let mut retained = lock(&self.retained);
        let now_ms = crate::broker::message::now_ms();
        for m in loaded.retained {
            let m = persist::message_of(m);
            if !m.expired(now_ms) {
                retained.insert(m);
            }
        }
        self.stats
            .retained
            .store(retained.map.len() as u64, Relaxed);
        self.stats.retained_bytes.store(retained.bytes, Relaxed);
        drop(retained);
        let mut sessions = lock(&self.sessions);
        let mut tree = self.tree_write();
        let now = std::time::Instant::now();
        for st in loaded.sessions {
            let id: Arc<str> = st.client_id.into();
            let mut s = Session::new(id.clone(), true);
            s.restore(st.messages, st.total_rows, st.total_bytes);
            // stored interval (capped) and time away before the restart
            let (expiry, left) =
                persist::restored_clock(st.clock, self.limits.session_expiry, now, now_ms);
            s.expiry = expiry;
            s.detached_at = Some(left);
            s.inbound.extend(st.inbound_qos2);
            let subs: Vec<(String, SubOpts)> = st
                .subscriptions
                .iter()
                .map(|row| (row.filter.clone(), persist::sub_opts(row)))
                .collect();
            for (f, o) in &subs {
                s.subscriptions.insert(f.clone(), *o);
            }
            self.flush_ops(&mut s);
            self.persistent.fetch_add(1, Relaxed);
            let cell = Cell::new(s);
            for (f, q) in subs {
                let Some(key) = tree_key(&f) else { continue };
                let sub = Sub {
                    cell: cell.clone(),
                    opts: q,
                    share: key.share.clone(),
                };
                tree.insert(key.filter, sub, |x| x.same(&cell, &key.share));
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
            // one past its expiry is over even before the sweep ends it
            let expired = s.expired(std::time::Instant::now());
            if let Some(old) = s.attached.take() {
                old.kick.cancel(); // MQTT-3.1.4-2
                // the old connection's disconnect finds the session taken
                // over and counts nothing: count it gone here
                dec(&self.stats.clients_connected);
                if s.peer.v5 {
                    dec(&self.stats.clients_v5);
                }
            } else if s.persistent {
                dec(&self.stats.clients_disconnected);
            }
            // a session whose last login was another user is not handed over
            let other_user = s.user.is_some() && s.user != c.user;
            if c.clean || !s.persistent || other_user || expired {
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
                if c.persistent && self.persistent.load(Relaxed) >= self.limits.max_sessions {
                    sessions.remove(&c.client_id);
                    self.stats.limits.hit(Limit::Sessions, &c.client_id);
                    return None;
                }
                let cell = Cell::new(Session::new(c.client_id.clone(), c.persistent));
                if c.persistent {
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
        s.expiry = c.expiry;
        s.peer = c.peer;
        if c.peer.v5 {
            self.stats.clients_v5.fetch_add(1, Relaxed);
        }
        s.attach(Attached {
            generation,
            kick: c.kick,
        });
        if c.persistent {
            self.store_clock(&s, None);
        }
        drop(s);
        self.stats.connected();
        Some((cell, present, generation))
    }

    /// Removes the persistent sessions whose client has been away longer
    /// than `persistent_session_expiry`, from memory and from disk;
    /// returns how many.
    pub fn expire_sessions(&self, now: std::time::Instant) -> usize {
        let mut sessions = lock(&self.sessions);
        let expired: Vec<Arc<Cell>> = sessions
            .values()
            .filter(|cell| cell.lock().expired(now))
            .cloned()
            .collect();
        for cell in &expired {
            sessions.remove(&cell.client_id);
        }
        drop(sessions);
        for cell in &expired {
            dec(&self.stats.clients_disconnected);
            self.drop_session(cell);
        }
        expired.len()
    }

    /// Stores a persistent session's expiry and when its client left
    /// (`None`: connected), so a restart keeps counting from there.
    fn store_clock(&self, s: &Session, gone_ms: Option<u64>) {
        if let Some(store) = &self.store {
            store.push(StoreOp::SetClock {
                client_id: s.client_id.to_string(),
                clock: persist::clock(s.expiry, gone_ms),
            });
        }
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
            let _ = self
                .persistent
                .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        }
        let mut tree = self.tree_write();
        for f in filters {
            if let Some(key) = tree_key(&f) {
                tree.remove(key.filter, |x| x.same(cell, &key.share));
            }
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
        drop(tree);
        if persistent && let Some(store) = &self.store {
            store.push(StoreOp::DeleteSession {
                client_id: cell.client_id.to_string(),
            });
        }
    }

    /// The connection of `generation` ended. A clean session ends with it;
    /// what a share gave it and its client did not acknowledge is returned
    /// for [`Router::redeliver_shared`].
    pub fn disconnect(&self, cell: &Arc<Cell>, generation: u64) -> Vec<Delivery> {
        let mut s = cell.lock();
        if s.attached.as_ref().map(|a| a.generation) != Some(generation) {
            return Vec::new(); // taken over: the new connection owns the session
        }
        let dropped = s.detach();
        add(&self.stats.publish_dropped, dropped as u64);
        if s.peer.v5 {
            dec(&self.stats.clients_v5);
        }
        // an MQTT 5 client may resume a stored session with an expiry of
        // 0: it ends with this connection
        let persistent = s.persistent && !s.expiry.is_zero();
        if persistent {
            self.store_clock(&s, Some(crate::broker::message::now_ms()));
        }
        drop(s);
        dec(&self.stats.clients_connected);
        if persistent {
            add(&self.stats.clients_disconnected, 1);
            return Vec::new();
        }
        let orphans = cell.lock().take_shared();
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&cell.client_id)
            .is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            sessions.remove(&cell.client_id);
        }
        drop(sessions);
        self.drop_session(cell);
        orphans
    }
}
