//! The forwarder's side of write-behind (`bridge/behind.rs`): messages of
//! the memory queue go out beside the outbox's rows, tracked as
//! [`Tracked::Behind`]; their PUBACK ends them in the queue
//! (`report.rs`).
//!
//! Owns no state. Must not touch the outbox.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::QoS;

use super::Forwarder;
use super::report::OTHER_KEY;
use super::window::{State, Tracked};
use crate::bridge::upstream::{Outgoing, Upstream};

impl<C: Upstream> Forwarder<C> {
    /// Sends messages of the write-behind memory queue while the window
    /// has room (before the outbox's rows: they are the present).
    pub(super) fn send_behind(&mut self, st: &mut State) {
        let Some(behind) = self.behind.clone() else {
            return;
        };
        let room = self.room(st);
        let mut taken = behind.take(room).into_iter();
        while let Some((seq, m)) = taken.next() {
            let q = match m.qos {
                0 => QoS::AtMostOnce,
                _ => QoS::AtLeastOnce,
            };
            let pkid = match st.other_pkid() {
                Some(p) if q != QoS::AtMostOnce => p,
                _ => {
                    behind.untake(std::iter::once(seq).chain(taken.map(|t| t.0)));
                    return;
                }
            };
            let o = Outgoing {
                topic: m.topic,
                qos: q,
                retain: m.retain,
                payload: m.payload,
                pkid,
                key: OTHER_KEY,
                properties: None,
            };
            if !self.client.publish(o) {
                behind.untake(std::iter::once(seq).chain(taken.map(|t| t.0)));
                return;
            }
            st.inflight.insert(pkid, Tracked::Behind(seq));
            self.counters.sent.fetch_add(1, Relaxed);
        }
    }
}
