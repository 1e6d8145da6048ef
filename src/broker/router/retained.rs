//! The router's retained messages: storing, replacing and clearing them as
//! they are published (MQTT-3.3.1-5..11) and finding the ones a new
//! subscription gets.
//!
//! Part of `router.rs` (same state, same lock order). Must not touch sockets.

use super::*;

impl Router {
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

    /// Sets, replaces or (empty payload) clears the retained message of
    /// its topic (MQTT-3.3.1-5/10/11).
    pub(super) fn retain(&self, msg: &Message) {
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
}
