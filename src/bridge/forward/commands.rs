//! Commands from upstream: handed to the local broker, acknowledged
//! upstream only once they are in the local publish queue.
//!
//! Owns the waiting commands of the forwarder's state. Must not wait:
//! every request to the upstream client is tried at once.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Forwarder;
use super::window::{State, V5Publish};
use crate::bridge::command_props::local_props;
use crate::bridge::upstream::Upstream;
use crate::reading::Publish;

/// Commands from upstream that wait for room in the local publish queue.
pub(super) const COMMANDS_WAITING: usize = 64;

impl<C: Upstream> Forwarder<C> {
    /// A publish from upstream: a command for the local broker when a
    /// `commands` rule matches. It is acknowledged upstream only once it is
    /// in the local publish queue; while that queue is full it waits here
    /// (in order, at most [`COMMANDS_WAITING`]; the broker sends no more than
    /// its in-flight window unacknowledged meanwhile). Past that, or while
    /// the gateway stops, it is dropped, counted in `commands_dropped` and
    /// logged; one dropped while stopping is not acknowledged.
    pub(super) fn command(&mut self, st: &mut State, p: V5Publish) {
        let upstream = String::from_utf8_lossy(&p.topic).into_owned();
        let Some(rule) = self
            .cfg
            .commands
            .iter()
            .find(|c| crate::bridge::filters::matches(&c.filter, &upstream))
        else {
            // not a command topic: nothing to hand on
            self.ack_command(st, p);
            return;
        };
        let topic = upstream
            .strip_prefix(rule.strip_prefix.as_str())
            .unwrap_or(&upstream)
            .to_string();
        let Some(tx) = &self.commands else {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %upstream, "uplink: command during the stop dropped (not acknowledged)");
            return;
        };
        info!(upstream = %upstream, topic = %topic, "uplink: command from upstream");
        let props = local_props(p.properties.as_ref(), &rule.strip_prefix);
        if let (Some(props), Some(tx)) = (props, &self.command_props) {
            let publish = Publish {
                topic,
                payload: p.payload.clone(),
                qos: rule.qos,
                retain: false,
            };
            if tx.try_send((publish, props)).is_err() {
                self.counters.commands_dropped.fetch_add(1, Relaxed);
                warn!(upstream = %upstream, "uplink: too many commands with MQTT 5 properties waiting; command dropped");
            }
            self.ack_command(st, p);
            return;
        }
        let publish = Publish {
            topic,
            payload: p.payload.clone(),
            qos: rule.qos,
            retain: false,
        };
        if st.commands.is_empty() {
            match tx.try_send(publish) {
                Ok(()) => self.ack_command(st, p),
                Err(mpsc::error::TrySendError::Full(publish)) => {
                    st.commands.push_back((publish, Some(p)));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.counters.commands_dropped.fetch_add(1, Relaxed);
                    warn!(upstream = %upstream, "uplink: local broker gone; command dropped");
                    self.ack_command(st, p);
                }
            }
        } else if st.commands.len() < COMMANDS_WAITING {
            st.commands.push_back((publish, Some(p)));
        } else {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %upstream, waiting = st.commands.len(),
                "uplink: local publish queue full and too many commands waiting; command dropped");
            self.ack_command(st, p);
        }
    }

    /// Hands the oldest waiting command on through `permit` and
    /// acknowledges it upstream.
    pub(super) fn command_handed_on(&mut self, st: &mut State, permit: mpsc::Permit<'_, Publish>) {
        if let Some((publish, ack)) = st.commands.pop_front() {
            permit.send(publish);
            if let Some(p) = ack {
                self.ack_command(st, p);
            }
        }
    }

    /// Acknowledges `p` upstream (QoS 1/2), now or, when the client has
    /// no room, at the next turn.
    pub(super) fn ack_command(&mut self, st: &mut State, p: V5Publish) {
        if p.qos != QoS::AtMostOnce && !self.client.ack(&p) {
            st.command_acks.push(p);
        }
    }

    /// Retries the acknowledgements the client had no room for.
    pub(super) fn send_command_acks(&mut self, st: &mut State) {
        for p in std::mem::take(&mut st.command_acks) {
            self.ack_command(st, p);
        }
    }
}
