//! What the upstream broker allows and refuses, as the forwarder follows
//! it: the window never holds more unacknowledged messages than the
//! broker's Receive Maximum, a row larger than its Maximum Packet Size is
//! dead-lettered unsent, QoS is capped at its Maximum QoS and the retain
//! flag dropped when Retain Available is 0 (each said once in the log),
//! `commands` filters it cannot take are refused with a clear error, and
//! a message it refused (PUBACK / PUBREC reason code ≥ 0x80) moves to the
//! dead-letter table with that reason, without a reconnect. A 3.1.1
//! broker says nothing: everything is allowed (`upstream::Limits`).
//!
//! Owns those decisions. Must not talk to the outbox or the network
//! other than through the forwarder's requests.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::QoS;
use tracing::{error, warn};

use super::Forwarder;
use super::window::{State, Tracked, off_the_wire};
use crate::bridge::config::CommandRule;
use crate::bridge::outbox::dead::Failure;
use crate::bridge::upstream::{Limits, Refusal, Upstream};

impl<C: Upstream> Forwarder<C> {
    /// Messages that may be sent now: the `inflight` window (rows sent
    /// and not yet deleted) and the broker's Receive Maximum (QoS 1/2
    /// messages not yet acknowledged).
    pub(super) fn room(&self, st: &State) -> usize {
        let window = (self.cfg.inflight as usize).saturating_sub(st.used());
        let receive = usize::from(st.limits.receive_max).saturating_sub(st.unacked());
        window.min(receive)
    }

    /// The largest packet that may be sent: `uplink.max_packet_size`, and
    /// the broker's Maximum Packet Size.
    pub(super) fn send_max(&self, st: &State) -> u64 {
        let ours = self.cfg.max_packet_size.bytes();
        st.limits
            .max_packet
            .map_or(ours, |m| ours.min(u64::from(m)))
    }

    /// The QoS and retain flag a message goes with on this connection.
    pub(super) fn allowed(&self, st: &State, qos: QoS, retain: bool) -> (QoS, bool) {
        let q = match (qos, st.limits.max_qos) {
            (_, 0) => QoS::AtMostOnce,
            (QoS::ExactlyOnce, 1) => QoS::AtLeastOnce,
            (q, _) => q,
        };
        (q, retain && st.limits.retain)
    }

    /// A CONNACK's limits: kept for the connection, and what they change
    /// for this config said once (again only when they change).
    pub(super) fn on_limits(&mut self, st: &mut State, limits: Limits) {
        st.limits = limits;
        if st.told == Some(limits) {
            return;
        }
        st.told = Some(limits);
        let top = self.cfg.forward.iter().map(|r| r.qos.as_u8()).max();
        if top.is_some_and(|q| q > limits.max_qos) {
            warn!(
                max_qos = limits.max_qos,
                "uplink: the upstream broker's Maximum QoS is {}: forward entries above it \
                 are sent at QoS {}",
                limits.max_qos,
                limits.max_qos
            );
        }
        if limits.max_qos == 0 {
            warn!(
                "uplink: at the broker's Maximum QoS 0 nothing is acknowledged: \
                 outbox rows are deleted once sent"
            );
        }
        if !limits.retain {
            warn!(
                "uplink: the upstream broker has no retained messages (Retain Available 0): forwards are sent without retain"
            );
        }
        let asked = self.cfg.session_expiry.get().as_secs();
        if let Some(granted) = limits.session_expiry.filter(|&g| u64::from(g) < asked) {
            warn!(
                granted_s = granted,
                asked_s = asked,
                "uplink: the upstream broker keeps the session for less than \
                 uplink.session_expiry: commands sent during a longer outage are lost upstream"
            );
        }
        if limits.receive_max < self.cfg.inflight {
            warn!(
                receive_maximum = limits.receive_max,
                inflight = self.cfg.inflight,
                "uplink: the upstream broker's Receive Maximum is below uplink.inflight: \
                 at most that many messages wait for their acknowledgement"
            );
        }
    }

    /// Whether the broker takes the `commands` filter `c`; an error is
    /// logged when it does not (said at every connect: nothing arrives).
    pub(super) fn command_allowed(&self, st: &State, i: usize, c: &CommandRule) -> bool {
        let shared = c.filter.starts_with("$share/");
        let wildcard = c.filter.contains(['+', '#']);
        let why = if shared && !st.limits.shared {
            "the upstream broker has no shared subscriptions (Shared Subscription Available 0)"
        } else if wildcard && !st.limits.wildcard {
            "the upstream broker takes no wildcards in subscriptions (Wildcard Subscription Available 0)"
        } else {
            return true;
        };
        error!(filter = %c.filter, "uplink.commands[{i}].filter: {why}: no commands arrive on it; name the topics without wildcards");
        false
    }

    /// The broker refused the message `pkid` (reason ≥ 0x80): a row moves
    /// to the dead-letter table with the reason (the connection goes on,
    /// no other message is blamed).
    pub(super) fn refused(&mut self, st: &mut State, pkid: u16, r: Refusal) {
        let t = st.inflight.remove(&pkid);
        off_the_wire(st, t);
        match t {
            Some(Tracked::Row { id, attempts, .. }) => st.failures.push(Failure {
                id,
                attempts: attempts.saturating_add(1),
                dead: Some(r.to_string()),
            }),
            Some(Tracked::Behind(seq)) => {
                // not in the outbox: no dead-letter row to keep
                warn!(reason = %r, "uplink: a write-behind message was refused upstream; dropped");
                self.counters.live_dropped.fetch_add(1, Relaxed);
                if let Some(b) = &self.behind {
                    b.acked(seq);
                }
            }
            Some(Tracked::Untracked) => {
                warn!(reason = %r, "uplink: a message not from the outbox (status or live) was refused upstream");
            }
            None => {}
        }
    }
}
