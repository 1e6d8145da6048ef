//! The packet handlers of a connected client, at any level (PUBLISH is
//! `publish.rs`): the acknowledgements of outgoing messages (one of the
//! wrong kind closes the connection, as mosquitto does; a 5.0 PUBREC of
//! 0x80 or more ends that exchange), PUBREL of an inbound QoS 2 message,
//! SUBSCRIBE with its options and identifier (and the retained messages
//! it asks for), UNSUBSCRIBE, PINGREQ, DISCONNECT (a 5.0 client may set
//! its session expiry there, or ask for its will with 0x04), AUTH
//! (refused: no enhanced authentication). Topics and filters past
//! `max_topic_levels` close the connection. Must not touch the socket:
//! replies go through the session's control queue.

use std::time::Duration;

use super::{Conn, End, TOO_DEEP};
use crate::broker::packet::props::Properties;
use crate::broker::packet::v5::{Ack, Packet, Subscription};
use crate::broker::packet::{DecodeError, reason};
use crate::broker::session::{AckIs, Control, Delivery};
use crate::broker::store::StoreOp;
use crate::broker::subscription::SubOpts;

impl Conn {
    pub(super) async fn handle(&mut self, p: Packet) -> Result<(), End> {
        match p {
            // MQTT-3.1.0-2
            Packet::Connect(_) => Err(End::Violation(DecodeError::Invalid("second CONNECT"))),
            // boxed: a connection's task is sized for its largest state, and
            // an idle connection should not hold room for a PUBLISH
            Packet::Publish(p) => Box::pin(self.publish(p)).await,
            Packet::PubAck(a) => self.outgoing_done(a, false),
            Packet::PubComp(a) => self.outgoing_done(a, true),
            Packet::PubRec(a) => self.outgoing_received(a),
            Packet::PubRel(a) => {
                self.released(a.pkid);
                Ok(())
            }
            Packet::Subscribe {
                pkid,
                filters,
                properties,
            } => Box::pin(self.subscribe(pkid, filters, &properties)).await,
            Packet::Unsubscribe { pkid, filters, .. } => self.unsubscribe(pkid, filters),
            Packet::PingReq => {
                self.control(Control::PingResp);
                Ok(())
            }
            Packet::Disconnect { reason, properties } => self.disconnected(reason, &properties),
            Packet::Auth { .. } => Err(End::Refused(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            )),
        }
    }

    /// PUBACK or PUBCOMP of a message sent to the client.
    fn outgoing_done(&mut self, a: Ack, comp: bool) -> Result<(), End> {
        let router = self.ctx.router.clone();
        let cell = self.cell();
        let mut s = cell.lock();
        let is = s.acked(a.pkid, comp);
        router.flush_ops(&mut s);
        drop(s);
        cell.wake.notify_one();
        cell.space.notify_waiters();
        wrong_kind(is)
    }

    /// PUBREC of a QoS 2 message sent to the client: PUBREL owed, or (5.0,
    /// a reason of 0x80 or more) the exchange ends.
    fn outgoing_received(&mut self, a: Ack) -> Result<(), End> {
        let router = self.ctx.router.clone();
        let is = {
            let mut s = self.cell().lock();
            let is = match a.reason >= 0x80 {
                true => s.refused_by_client(a.pkid),
                false => s.received(a.pkid),
            };
            router.flush_ops(&mut s);
            is
        };
        wrong_kind(is)?;
        if a.reason < 0x80 {
            // an unknown id is answered too, as mosquitto does: the client
            // may hold a message from before a restart
            self.control(Control::Ack(0x62, a.pkid));
        } else {
            self.cell().space.notify_waiters();
        }
        Ok(())
    }

    /// PUBREL of an inbound QoS 2 message: PUBCOMP (MQTT-4.3.3-2); a 5.0
    /// client that names an id the broker does not hold gets 0x92.
    fn released(&mut self, pkid: u16) {
        let router = self.ctx.router.clone();
        let mut s = self.cell().lock();
        let known = s.inbound.remove(&pkid);
        if known
            && s.persistent
            && let Some(store) = &router.store
        {
            store.push(StoreOp::RemoveInbound {
                client_id: s.client_id.to_string(),
                pkid,
            });
        }
        drop(s);
        if known {
            self.unacked = self.unacked.saturating_sub(1);
        }
        let comp = match known || !self.v5() {
            true => Control::Ack(0x70, pkid),
            false => Control::AckCode(0x70, pkid, reason::PACKET_IDENTIFIER_NOT_FOUND),
        };
        self.ack(comp, None);
    }

    async fn subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<Subscription>,
        props: &Properties,
    ) -> Result<(), End> {
        let router = self.ctx.router.clone();
        let cell = self.cell().clone();
        if filters
            .iter()
            .any(|f| self.ctx.too_deep(&f.filter, &cell.client_id))
        {
            return Err(End::Violation(TOO_DEEP));
        }
        // back-pressure from the store, as for PUBLISH
        if let Some(store) = &router.store {
            store.room().await;
        }
        let id = props.subscription_identifiers.first().copied();
        let filters = filters
            .into_iter()
            .map(|f| {
                let opts = SubOpts {
                    qos: f.qos,
                    no_local: f.no_local,
                    retain_as_published: f.retain_as_published,
                    id,
                    retain_handling: f.retain_handling,
                };
                (f.filter, opts)
            })
            .collect();
        let (codes, for_retained) = router.subscribe(&cell, filters, self.user());
        self.ack(Control::SubAck(pkid, codes), None);
        for (msg, qos) in router.retained_for(&for_retained).await {
            let d = Delivery {
                msg,
                qos,
                retain: true, // MQTT-3.3.1-8
                seq: 0,
                sub_ids: id.into_iter().collect(),
                share: None,
            };
            router.deliver(&cell, d).await;
        }
        Ok(())
    }

    fn unsubscribe(&mut self, pkid: u16, filters: Vec<String>) -> Result<(), End> {
        let cell = self.cell();
        if filters
            .iter()
            .any(|f| self.ctx.too_deep(f, &cell.client_id))
        {
            return Err(End::Violation(TOO_DEEP));
        }
        let existed = self.ctx.router.unsubscribe(cell, &filters);
        let ack = match self.v5() {
            true => {
                let codes = existed
                    .iter()
                    .map(|e| match e {
                        true => reason::SUCCESS,
                        false => reason::NO_SUBSCRIPTION_EXISTED,
                    })
                    .collect();
                Control::UnsubAck(pkid, codes)
            }
            false => Control::Ack(0xB0, pkid),
        };
        self.ack(ack, None);
        Ok(())
    }

    /// DISCONNECT: the session expiry the client sets there (never from 0
    /// to more, MQTT-3.14.2-2), and whether it asks for its will (0x04).
    fn disconnected(&mut self, code: u8, props: &Properties) -> Result<(), End> {
        if let Some(secs) = props.session_expiry_interval {
            let mut s = self.cell().lock();
            if s.expiry.is_zero() && secs > 0 {
                return Err(End::Refused(
                    reason::PROTOCOL_ERROR,
                    "session expiry set at DISCONNECT after 0 at CONNECT",
                ));
            }
            s.expiry = Duration::from_secs(u64::from(secs)).min(self.ctx.limits.max_session_expiry);
        }
        match code {
            reason::DISCONNECT_WITH_WILL_MESSAGE => Err(End::DisconnectWithWill),
            _ => Err(End::Disconnect),
        }
    }
}

/// An acknowledgement of the wrong kind for its message closes the
/// connection (mosquitto: a protocol error); an unknown id is ignored.
fn wrong_kind(is: AckIs) -> Result<(), End> {
    match is {
        AckIs::WrongKind => Err(End::Violation(DecodeError::Protocol(
            "acknowledgement of the wrong kind for that message",
        ))),
        AckIs::Done | AckIs::Unknown => Ok(()),
    }
}
