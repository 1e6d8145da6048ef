//! Subscribing and unsubscribing: the ACL, `max_subscriptions_per_client`
//! and a well-formed `$share/{group}/{filter}` decide each filter's code;
//! the tree, the session and (for a persistent session, one row per
//! filter) the store are updated. Must not deliver: the caller sends the
//! retained messages [`Router::subscribe`] names.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::Router;
use super::Sub;
use crate::broker::limits::Limit;
use crate::broker::persist;
use crate::broker::session::{Cell, Session};
use crate::broker::store::StoreOp;
use crate::broker::subscription::{SubOpts, tree_key};

/// SUBACK codes of a refused filter, MQTT 5's (a 3.1.1 client gets
/// 0x80 for each, MQTT-3.9.3).
const NOT_AUTHORIZED: u8 = 0x87;
const TOPIC_FILTER_INVALID: u8 = 0x8F;
const QUOTA_EXCEEDED: u8 = 0x97;

impl Router {
    /// Adds subscriptions; returns the SUBACK codes and the granted
    /// filters whose retained messages the caller then delivers
    /// (MQTT-3.8.4-3, with [`Router::retained_for`]): not a shared one
    /// (MQTT 5 section 4.8.2), and by Retain Handling (MQTT-3.3.1-9/10/11:
    /// 0 every time, 1 for a new subscription only, 2 never). A filter the ACL
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
        let mut for_retained: Vec<(String, SubOpts)> = Vec::new();
        {
            let s = cell.lock();
            let mut held = s.subscriptions.len();
            for (f, q) in filters {
                let Some(key) = tree_key(&f) else {
                    codes.push(TOPIC_FILTER_INVALID); // a malformed $share filter
                    continue;
                };
                if let Some(acl) = &self.acl
                    && !s.internal
                    && !acl.can_subscribe(user, &cell.client_id, key.filter)
                {
                    codes.push(NOT_AUTHORIZED);
                    continue;
                }
                let new =
                    !s.subscriptions.contains_key(&f) && !granted.iter().any(|(g, _)| *g == f);
                if new && held >= self.limits.max_subscriptions {
                    self.stats.limits.hit(Limit::Subscriptions, &cell.client_id);
                    codes.push(QUOTA_EXCEEDED);
                    continue;
                }
                held += usize::from(new);
                codes.push(q.qos);
                let retained = match q.retain_handling {
                    0 => true,
                    1 => new,
                    _ => false,
                };
                if retained && !f.starts_with("$share/") {
                    for_retained.push((f.clone(), q));
                }
                match granted.iter_mut().find(|(g, _)| *g == f) {
                    Some(g) => g.1 = q,
                    None => granted.push((f, q)),
                }
            }
        }
        let mut tree = self.tree_write();
        let mut s = cell.lock();
        for (f, q) in &granted {
            let Some(key) = tree_key(f) else { continue };
            let sub = Sub {
                cell: cell.clone(),
                opts: *q,
                share: key.share.clone(),
            };
            tree.insert(key.filter, sub, |x| x.same(cell, &key.share));
            s.subscriptions.insert(f.clone(), *q);
            self.store_subscription(
                &s,
                StoreOp::Subscribe {
                    client_id: s.client_id.to_string(),
                    sub: persist::stored_sub(f, *q),
                },
            );
        }
        self.stats.subscriptions.store(tree.len() as u64, Relaxed);
        (codes, for_retained)
    }

    fn store_subscription(&self, s: &Session, op: StoreOp) {
        if s.persistent
            && let Some(store) = &self.store
        {
            store.push(op);
        }
    }

    /// Removes subscriptions; says for each filter whether it existed.
    pub fn unsubscribe(&self, cell: &Arc<Cell>, filters: &[String]) -> Vec<bool> {
        let mut tree = self.tree_write();
        let mut s = cell.lock();
        let mut existed = Vec::with_capacity(filters.len());
        for f in filters {
            if let Some(key) = tree_key(f) {
                tree.remove(key.filter, |x| x.same(cell, &key.share));
            }
            existed.push(s.subscriptions.remove(f).is_some());
            if existed.last() == Some(&true) {
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
        existed
    }
}
