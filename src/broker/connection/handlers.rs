//! The packet handlers of a connected client: PUBLISH (ACL, `$SYS`
//! refused, inbound QoS 2 exactly once, the intake and the store before
//! the acknowledgement), the acknowledgements of outgoing messages (one of
//! the wrong kind closes the connection, as mosquitto does), SUBSCRIBE
//! (with retained messages), UNSUBSCRIBE, PINGREQ, DISCONNECT; topics and
//! filters past `max_topic_levels` close the connection. Must not touch
//! the socket: replies go through the session's control queue.

use super::{Conn, End, TOO_DEEP};
use crate::broker::limits::Limit;
use crate::broker::message::Message;
use crate::broker::packet::{self, DecodeError, Packet};
use crate::broker::router::Durable;
use crate::broker::session::{AckIs, Control, Delivery};
use crate::broker::stats::add;
use crate::broker::store::StoreOp;
use crate::broker::subscription::SubOpts;

impl Conn {
    pub(super) async fn handle(&mut self, p: Packet) -> Result<(), End> {
        let router = self.ctx.router.clone();
        match p {
            Packet::Connect(_) => Err(End::Violation(DecodeError::Invalid("second CONNECT"))), // MQTT-3.1.0-2
            Packet::Publish(p) => self.publish(p).await,
            Packet::PubAck(id) | Packet::PubComp(id) => {
                let comp = matches!(p, Packet::PubComp(_));
                let cell = self.cell();
                let mut s = cell.lock();
                let is = s.acked(id, comp);
                router.flush_ops(&mut s);
                drop(s);
                cell.wake.notify_one();
                cell.space.notify_waiters();
                wrong_kind(is)
            }
            Packet::PubRec(id) => {
                let is = {
                    let mut s = self.cell().lock();
                    let is = s.received(id);
                    router.flush_ops(&mut s);
                    is
                };
                wrong_kind(is)?;
                // an unknown id is answered too, as mosquitto does: the
                // client may hold a message from before a restart
                self.control(Control::Ack(0x62, id));
                Ok(())
            }
            Packet::PubRel(id) => {
                let cell = self.cell().clone();
                let mut s = cell.lock();
                if s.inbound.remove(&id)
                    && s.persistent
                    && let Some(store) = &router.store
                {
                    store.push(StoreOp::RemoveInbound {
                        client_id: s.client_id.to_string(),
                        pkid: id,
                    });
                }
                drop(s);
                self.ack(Control::Ack(0x70, id), None); // MQTT-4.3.3-2
                Ok(())
            }
            Packet::Subscribe { pkid, filters } => {
                let cell = self.cell().clone();
                if filters
                    .iter()
                    .any(|(f, _)| self.ctx.too_deep(f, &cell.client_id))
                {
                    return Err(End::Violation(TOO_DEEP));
                }
                // back-pressure from the store, as for PUBLISH
                if let Some(store) = &router.store {
                    store.room().await;
                }
                let filters = filters
                    .into_iter()
                    .map(|(f, q)| (f, SubOpts::qos(q)))
                    .collect();
                let (codes, granted) = router.subscribe(&cell, filters, self.user());
                self.ack(Control::SubAck(pkid, codes), None);
                for (msg, qos) in router.retained_for(&granted).await {
                    let d = Delivery {
                        msg,
                        qos,
                        retain: true, // MQTT-3.3.1-8
                        seq: 0,
                        sub_ids: Vec::new(),
                    };
                    router.deliver(&cell, d).await;
                }
                Ok(())
            }
            Packet::Unsubscribe { pkid, filters } => {
                let cell = self.cell();
                if filters
                    .iter()
                    .any(|f| self.ctx.too_deep(f, &cell.client_id))
                {
                    return Err(End::Violation(TOO_DEEP));
                }
                router.unsubscribe(cell, &filters);
                self.ack(Control::Ack(0xB0, pkid), None);
                Ok(())
            }
            Packet::PingReq => {
                self.control(Control::PingResp);
                Ok(())
            }
            Packet::Disconnect => Err(End::Disconnect),
        }
    }

    async fn publish(&mut self, p: packet::Publish) -> Result<(), End> {
        let router = self.ctx.router.clone();
        if p.payload.len() > self.ctx.max_payload {
            return Err(End::Violation(DecodeError::TooLarge {
                size: p.payload.len(),
                max: self.ctx.max_payload,
            }));
        }
        let cell = self.cell().clone();
        if self.ctx.too_deep(&p.topic, &cell.client_id) {
            return Err(End::Violation(TOO_DEEP));
        }
        add(&router.stats.publish_received, 1);
        let ack = match p.qos {
            0 => None,
            1 => Some(Control::Ack(0x40, p.pkid)),
            _ => Some(Control::Ack(0x50, p.pkid)),
        };
        if p.qos == 2 {
            let mut s = cell.lock();
            if !s.inbound.insert(p.pkid) {
                drop(s);
                // a resent QoS 2 PUBLISH before PUBREL: not delivered again (MQTT-4.3.3-2)
                if let Some(c) = ack {
                    self.ack(c, None);
                }
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
        // back-pressure from the store: a publisher waits while its
        // writer is more than HIGH_WATER behind (memory stays bounded)
        if let Some(store) = &router.store {
            store.room().await;
        }
        // clients do not write the broker's own figures (mosquitto drops them too)
        let sys = p.topic.starts_with("$SYS");
        if sys {
            router.stats.limits.hit(Limit::SysPublish, &cell.client_id);
        }
        let allowed = !sys
            && match &router.acl {
                Some(acl) => acl.can_write(self.user(), &cell.client_id, &p.topic),
                None => true,
            };
        let mut durable = Vec::new();
        if allowed {
            let msg = Message::new(p.topic.into(), p.payload, p.qos, p.retain);
            // QoS 0 on a forwarded topic goes live (the intake returns None)
            if let Some(f) = router.intake(&msg) {
                durable.push(f);
            }
            if let Some(f) = router.publish_from(msg, Some(&cell)).await {
                durable.push(f);
            }
        } else if !sys {
            add(&router.stats.publish_denied, 1);
        }
        let Some(c) = ack else { return Ok(()) };
        let wait: Option<Durable> = match durable.len() {
            0 => None,
            1 => durable.pop(),
            _ => Some(Box::pin(async move {
                let mut ok = true;
                for f in durable {
                    ok &= f.await;
                }
                ok
            })),
        };
        self.ack(c, wait);
        Ok(())
    }
}

/// An acknowledgement of the wrong kind for its message closes the
/// connection (mosquitto: a protocol error); an unknown id is ignored.
fn wrong_kind(is: AckIs) -> Result<(), End> {
    match is {
        AckIs::WrongKind => Err(End::Violation(DecodeError::Invalid(
            "acknowledgement of the wrong kind for that message",
        ))),
        AckIs::Done | AckIs::Unknown => Ok(()),
    }
}
