//! The retained messages (MQTT-3.3.1-5..11): set, replaced and cleared by
//! retained PUBLISHes within `max_retained_messages` / `max_retained_bytes`
//! (the broker's own `$SYS` figures not counted), mirrored into the store
//! (not `$` topics), and looked up for a SUBSCRIBE off the lock, yielding
//! to the runtime every [`MATCH_BUDGET`] matches. Must not deliver.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{Router, lock};
use crate::broker::limits::Limit;
use crate::broker::message::Message;
use crate::broker::persist;
use crate::broker::store::StoreOp;
use crate::broker::subscription::SubOpts;
use crate::broker::topics::matches;

/// Filter-against-topic matches between two yields while the retained
/// messages for a SUBSCRIBE are looked up (about a millisecond of work).
pub const MATCH_BUDGET: usize = 20_000;

/// The retained messages; `count` and `bytes` (topic + payload) cover the
/// clients' and the gateway's, not the broker's own `$SYS` figures.
#[derive(Default)]
pub(super) struct Retained {
    pub(super) map: HashMap<Arc<str>, Message>,
    pub(super) count: usize,
    pub(super) bytes: u64,
}

impl Retained {
    pub(super) fn counted(topic: &str) -> bool {
        !topic.starts_with("$SYS/")
    }

    pub(super) fn insert(&mut self, msg: Message) {
        self.remove(&msg.topic);
        if Self::counted(&msg.topic) {
            self.count += 1;
            self.bytes += msg.size() as u64;
        }
        self.map.insert(msg.topic.clone(), msg);
    }

    pub(super) fn remove(&mut self, topic: &str) -> Option<Message> {
        let old = self.map.remove(topic)?;
        if Self::counted(topic) {
            self.count -= 1;
            self.bytes = self.bytes.saturating_sub(old.size() as u64);
        }
        Some(old)
    }
}

impl Router {
    /// Sets, replaces or (empty payload) clears the retained message of
    /// its topic (MQTT-3.3.1-5/10/11). A new message past
    /// `max_retained_messages` or `max_retained_bytes` is not retained (an
    /// older one of its topic is cleared: never a stale value) and counted.
    pub(super) fn retain(&self, msg: &Message) {
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
                    msg: persist::stored_message(m, m.qos, true, &[]),
                },
                None => StoreOp::ClearRetained {
                    topic: msg.topic.to_string(),
                },
            });
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
}
