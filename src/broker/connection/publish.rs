//! A client's PUBLISH, at any level: the topic (an MQTT 5 Topic Alias
//! resolved or set, MQTT-3.3.2-10..12; 0x94 past `max_topic_alias`), its
//! levels, the Receive Maximum the broker announced (0x93 past it,
//! MQTT-3.3.4-7), inbound QoS 2 exactly once, `$SYS` and the ACL (0x87 to
//! a 5.0 client, acknowledged and dropped at 3.1.1), a UTF-8 payload when
//! its format says so and `validate_utf8_payloads` is on (0x99), the
//! message's properties and expiry kept for its subscribers, then the
//! intake and the store before the acknowledgement. Must not touch the
//! socket.

use std::sync::Arc;

use bytes::Bytes;

use super::{Conn, End, TOO_DEEP};
use crate::broker::limits::Limit;
use crate::broker::message::{Message, MessageProps};
use crate::broker::packet::props::Properties;
use crate::broker::packet::{DecodeError, reason, v5};
use crate::broker::router::Durable;
use crate::broker::session::Control;
use crate::broker::stats::add;
use crate::broker::store::StoreOp;

/// The properties a message carries to its subscribers; `None` when it
/// has none (3.1.1 publishers).
fn message_props(p: &Properties) -> Option<Arc<MessageProps>> {
    let m = MessageProps {
        payload_format: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user: p.user_properties.clone(),
    };
    (!m.is_empty()).then(|| Arc::new(m))
}

/// A message as published, with its MQTT 5 properties and expiry.
fn message(topic: Arc<str>, payload: Bytes, qos: u8, retain: bool, p: &Properties) -> Message {
    let mut m = Message::new(topic, payload, qos, retain);
    m.props = message_props(p);
    if let Some(secs) = p.message_expiry_interval {
        m = m.expiring_in(std::time::Duration::from_secs(u64::from(secs)));
    }
    m
}

/// The will as a message (its properties: MQTT-3.1.3-9..11).
pub(super) fn will_message(
    topic: Arc<str>,
    payload: Bytes,
    qos: u8,
    retain: bool,
    p: &Properties,
) -> Message {
    message(topic, payload, qos, retain, p)
}

impl Conn {
    /// The topic of `p`: its name, or the one its Topic Alias stands for
    /// (an alias with a name sets it).
    fn resolve_topic(&mut self, p: &v5::Publish) -> Result<Arc<str>, End> {
        let Some(alias) = p.properties.topic_alias else {
            return Ok(p.topic.as_str().into());
        };
        if alias == 0 || alias > self.ctx.limits.max_topic_alias {
            // MQTT-3.3.2-9
            return Err(End::Refused(
                reason::TOPIC_ALIAS_INVALID,
                "topic alias out of range",
            ));
        }
        if p.topic.is_empty() {
            return self
                .aliases
                .get(&alias)
                .cloned()
                .ok_or(End::Refused(reason::PROTOCOL_ERROR, "unknown topic alias"));
        }
        let topic: Arc<str> = p.topic.as_str().into();
        self.aliases.insert(alias, topic.clone());
        Ok(topic)
    }

    pub(super) async fn publish(&mut self, p: v5::Publish) -> Result<(), End> {
        let router = self.ctx.router.clone();
        if p.payload.len() > self.ctx.max_payload {
            return Err(End::Violation(DecodeError::TooLarge {
                size: p.payload.len(),
                max: self.ctx.max_payload,
            }));
        }
        let cell = self.cell().clone();
        let topic = self.resolve_topic(&p)?;
        if self.ctx.too_deep(&topic, &cell.client_id) {
            return Err(End::Violation(TOO_DEEP));
        }
        add(&router.stats.publish_received, 1);
        let first = match p.qos {
            0 => None,
            1 => Some(0x40),
            _ => Some(0x50),
        };
        if p.qos == 2 {
            let mut s = cell.lock();
            if !s.inbound.insert(p.pkid) {
                drop(s);
                // a resent QoS 2 PUBLISH before PUBREL: not delivered again (MQTT-4.3.3-2)
                self.ack(Control::Ack(0x50, p.pkid), None);
                return Ok(());
            }
            if s.persistent
                && let Some(store) = &router.store
            {
                store.push(StoreOp::AddInbound {
                    client_id: s.client_id.to_string(),
                    pkid: p.pkid,
                });
            }
        }
        if p.qos > 0 {
            self.unacked += 1;
            if self.v5() && self.unacked > usize::from(self.ctx.limits.receive_maximum) {
                return Err(End::Refused(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "more QoS 1/2 PUBLISHes unacknowledged than the receive maximum",
                ));
            }
        }
        // back-pressure from the store: a publisher waits while its
        // writer is more than HIGH_WATER behind (memory stays bounded)
        if let Some(store) = &router.store {
            store.room().await;
        }
        let code = self.refusal(&topic, &p);
        let mut durable = Vec::new();
        if code == reason::SUCCESS {
            let msg = message(topic, p.payload, p.qos, p.retain, &p.properties);
            // QoS 0 on a forwarded topic goes live (the intake returns None)
            if let Some(f) = router.intake(&msg) {
                durable.push(f);
            }
            if let Some(f) = router.publish_from(msg, Some(&cell)).await {
                durable.push(f);
            }
        }
        let Some(first) = first else {
            return match code {
                reason::PAYLOAD_FORMAT_INVALID if self.v5() => Err(End::Refused(
                    code,
                    "payload is not UTF-8 as its format says",
                )),
                _ => Ok(()),
            };
        };
        self.acknowledge(first, p.pkid, code, durable);
        Ok(())
    }

    /// Why a PUBLISH is not routed: `$SYS` (mosquitto drops it too), the
    /// ACL (MQTT-3.3.5-2), a payload that is not the UTF-8 its format
    /// says; 0x00 when it is.
    fn refusal(&self, topic: &str, p: &v5::Publish) -> u8 {
        let router = &self.ctx.router;
        let client = &self.cell().client_id;
        if topic.starts_with("$SYS") {
            router.stats.limits.hit(Limit::SysPublish, client);
            return reason::NOT_AUTHORIZED;
        }
        if let Some(acl) = &router.acl
            && !acl.can_write(self.user(), client, topic)
        {
            add(&router.stats.publish_denied, 1);
            return reason::NOT_AUTHORIZED;
        }
        if self.ctx.limits.validate_utf8
            && p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            return reason::PAYLOAD_FORMAT_INVALID; // MQTT-3.3.2-4
        }
        reason::SUCCESS
    }

    /// PUBACK or PUBREC once `durable` is done; a 5.0 client gets `code`,
    /// and a refused QoS 2 message ends its flow there.
    fn acknowledge(&mut self, first: u8, pkid: u16, code: u8, durable: Vec<Durable>) {
        let wait: Option<Durable> = match durable.len() {
            0 => None,
            1 => durable.into_iter().next(),
            _ => Some(Box::pin(async move {
                let mut ok = true;
                for f in durable {
                    ok &= f.await;
                }
                ok
            })),
        };
        if code == reason::SUCCESS || !self.v5() {
            return self.ack(Control::Ack(first, pkid), wait);
        }
        if first == 0x50 {
            // MQTT-4.3.3: a PUBREC of 0x80 or more ends the exchange
            let mut s = self.cell().lock();
            s.inbound.remove(&pkid);
            if s.persistent
                && let Some(store) = &self.ctx.router.store
            {
                store.push(StoreOp::RemoveInbound {
                    client_id: s.client_id.to_string(),
                    pkid,
                });
            }
            drop(s);
            self.unacked = self.unacked.saturating_sub(1);
        }
        self.ack(Control::AckCode(first, pkid, code), wait);
    }
}
