//! Who gets a message: the sessions whose subscriptions match, each once
//! at the highest matching QoS with every matching subscription identifier
//! (MQTT-3.3.5-1, MQTT-3.3.4-3), without the publisher's own no-local
//! subscriptions (MQTT-3.8.3-3), and one member of each shared
//! subscription in turn. Must not deliver: the router's `deliver` does.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Router, Sub, lock};

/// Shares whose round-robin turn is remembered at most.
pub const MAX_SHARES: usize = 10_000;
use crate::broker::message::Message;
use crate::broker::session::{Cell, Delivery};

/// One session's copy of a message: the matching subscriptions folded
/// (MQTT-3.3.5-1: one copy at the highest QoS, every identifier).
pub(super) struct Target {
    pub(super) cell: Arc<Cell>,
    pub(super) qos: u8,
    pub(super) retain_as_published: bool,
    pub(super) ids: Vec<u32>,
    /// The share that picked this session (a copy for it alone).
    pub(super) share: Option<Arc<str>>,
}

impl Router {
    /// The sessions `msg` goes to, each once (MQTT-3.3.5-1), without the
    /// publisher's own no-local subscriptions (MQTT-3.8.3-3; a bridge's
    /// session is no-local as a whole).
    pub(super) fn targets(&self, msg: &Message, from: Option<&Arc<Cell>>) -> Vec<Target> {
        let bridge = from.is_some_and(|c| c.lock().no_local);
        let mut targets: Vec<Target> = Vec::new();
        let mut shares: Vec<(Arc<str>, Vec<Sub>)> = Vec::new();
        let tree = self.tree.read().unwrap_or_else(|e| e.into_inner());
        tree.for_each_match(&msg.topic, |s| {
            let own = from.is_some_and(|c| Arc::ptr_eq(c, &s.cell));
            if own && (bridge || s.opts.no_local) {
                return;
            }
            if let Some(share) = &s.share {
                match shares.iter_mut().find(|(k, _)| k == share) {
                    Some((_, members)) => members.push(s.clone()),
                    None => shares.push((share.clone(), vec![s.clone()])),
                }
                return;
            }
            fold(&mut targets, s);
        });
        drop(tree);
        for (share, members) in shares {
            fold(&mut targets, &self.pick_member(&share, members));
        }
        targets
    }

    /// Hands the unacknowledged QoS 1/2 messages of a share member whose
    /// session ended to the share's other members, each to the next in
    /// turn (a new delivery to it: no DUP); dropped and counted when no
    /// member is left.
    pub async fn redeliver_shared(&self, orphans: Vec<Delivery>) {
        for mut d in orphans {
            let Some(share) = d.share.clone() else {
                continue;
            };
            let mut members = Vec::new();
            {
                let tree = self.tree.read().unwrap_or_else(|e| e.into_inner());
                tree.for_each_match(&d.msg.topic, |s| {
                    if s.share.as_ref() == Some(&share) {
                        members.push(s.clone());
                    }
                });
            }
            if members.is_empty() {
                crate::broker::stats::add(&self.stats.publish_dropped, 1);
                continue;
            }
            let m = self.pick_member(&share, members);
            d.qos = d.msg.qos.min(m.opts.qos);
            d.sub_ids = m.opts.id.into_iter().collect();
            d.seq = 0;
            self.stats.shared_redelivered.fetch_add(1, Relaxed);
            self.deliver(&m.cell, d).await;
        }
    }

    /// One member of a share for the next message: round robin among the
    /// members whose client is connected, or among all when none is (the
    /// message then waits in that session, or is dropped at QoS 0 like any
    /// offline delivery).
    fn pick_member(&self, share: &Arc<str>, members: Vec<Sub>) -> Sub {
        let online: Vec<&Sub> = members
            .iter()
            .filter(|m| m.cell.lock().attached.is_some())
            .collect();
        let pool: Vec<&Sub> = match online.is_empty() {
            true => members.iter().collect(),
            false => online,
        };
        let mut turns = lock(&self.share_turns);
        // bounded: shares that came and went leave their turn behind; past
        // the cap every share starts its round again (a fairness reset only)
        if turns.len() >= MAX_SHARES && !turns.contains_key(share) {
            turns.clear();
        }
        let turn = turns.entry(share.clone()).or_insert(0);
        let pick = pool[*turn % pool.len()].clone();
        *turn = turn.wrapping_add(1);
        pick
    }
}

/// Adds subscription `s` to the copy of its session, one per session.
fn fold(targets: &mut Vec<Target>, s: &Sub) {
    let at = match targets.iter().position(|t| Arc::ptr_eq(&t.cell, &s.cell)) {
        Some(at) => at,
        None => {
            targets.push(Target {
                cell: s.cell.clone(),
                qos: 0,
                retain_as_published: false,
                ids: Vec::new(),
                share: None,
            });
            targets.len() - 1
        }
    };
    let t = &mut targets[at];
    t.qos = t.qos.max(s.opts.qos);
    t.retain_as_published |= s.opts.retain_as_published;
    t.ids.extend(s.opts.id);
    if t.share.is_none() {
        t.share = s.share.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::session::{Limits, Session};
    use crate::broker::subscription::SubOpts;

    #[test]
    fn the_turns_of_shares_that_came_and_went_stay_bounded() {
        let router = Router::new(Limits::for_tests(10), None, None);
        let sub = |id: &str| Sub {
            cell: crate::broker::session::Cell::new(Session::new(id.into(), false)),
            opts: SubOpts::qos(0),
            share: None,
        };
        let (a, b) = (sub("a"), sub("b"));
        let share: Arc<str> = "$share/g/t".into();
        let first = router.pick_member(&share, vec![a.clone(), b.clone()]);
        let second = router.pick_member(&share, vec![a, b]);
        assert!(!Arc::ptr_eq(&first.cell, &second.cell), "in turn");
        for i in 0..MAX_SHARES + 10 {
            let s: Arc<str> = format!("$share/g{i}/t").into();
            router.pick_member(&s, vec![sub("m")]);
        }
        assert!(lock(&router.share_turns).len() <= MAX_SHARES);
    }
}
