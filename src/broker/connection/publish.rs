//! One client's PUBLISH: topic and ACL checks, the intake commit before
//! the acknowledgement, QoS 2 ids, routing.
//!
//! Part of `connection.rs` (same connection state). Must not write to the
//! socket itself: acknowledgements go through the connection's control queue.

use super::*;

impl Conn {
    pub(super) async fn publish(&mut self, p: packet::Publish) -> Result<(), End> {
        let router = self.ctx.router.clone();
        if p.payload.len() > self.ctx.max_payload {
            return Err(End::Violation(DecodeError::TooLarge {
                size: p.payload.len(),
                max: self.ctx.max_payload,
            }));
        }
        let cell = self.cell().clone();
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
        let allowed = match &router.acl {
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
            if let Some(f) = router.publish(msg).await {
                durable.push(f);
            }
        } else {
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
