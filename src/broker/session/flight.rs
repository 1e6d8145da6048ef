//! The session's in-flight window: taking what may be sent now (QoS 0,
//! new QoS 1/2 up to `max_inflight`, retries after a reconnect), and the
//! acknowledgements that settle it, outbound and inbound (QoS 2 ids).
//!
//! Part of `session.rs` (same state). Must not touch sockets or the store.

use super::*;

impl Session {
    /// Moves what the connection may send now into `out`: control packets,
    /// then (after a reconnect) everything in flight again, then queued
    /// messages while the in-flight window has room. At most `max` items.
    pub fn take(&mut self, l: &Limits, out: &mut Vec<Outgoing>, max: usize) {
        while out.len() < max
            && let Some(c) = self.control.pop_front()
        {
            out.push(Outgoing::Control(c));
        }
        if std::mem::take(&mut self.resend) {
            for (pkid, f) in &self.inflight {
                out.push(match f {
                    Flight::Sent(d) => Outgoing::Publish {
                        d: d.clone(),
                        pkid: *pkid,
                        dup: true, // MQTT-4.4.0-1
                    },
                    Flight::Released { .. } => Outgoing::Control(Control::Ack(0x62, *pkid)),
                });
            }
        }
        while out.len() < max {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos > 0 && self.inflight.len() >= l.max_inflight {
                break;
            }
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(d.msg.size());
            let pkid = if d.qos > 0 {
                let pkid = self.alloc_pkid();
                if d.seq != 0 {
                    self.ops.push(StoreOp::SetState {
                        client_id: self.client_id.to_string(),
                        seq: d.seq,
                        state: OutState::Sent { pkid },
                    });
                }
                self.inflight.push_back((pkid, Flight::Sent(d.clone())));
                pkid
            } else {
                0
            };
            out.push(Outgoing::Publish {
                d,
                pkid,
                dup: false,
            });
        }
        if self.queue.len() <= l.max_queued_messages / 2 {
            self.congested = false;
        }
        self.writing = !out.is_empty();
    }

    pub(super) fn position(&self, pkid: u16) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pkid)
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2, after PUBREC): the message is done.
    /// `false` when no such message was in flight.
    pub fn acked(&mut self, pkid: u16, comp: bool) -> bool {
        let Some(i) = self.position(pkid) else {
            return false;
        };
        let seq = match &self.inflight[i].1 {
            Flight::Sent(d) if !comp && d.qos == 1 => d.seq,
            Flight::Released { seq } if comp => *seq,
            _ => return false,
        };
        self.inflight.remove(i);
        if seq != 0 {
            self.ops.push(StoreOp::RemoveMessage {
                client_id: self.client_id.to_string(),
                seq,
            });
        }
        true
    }

    /// PUBREC: PUBREL is owed from now on (MQTT-4.3.3-1).
    pub fn received(&mut self, pkid: u16) -> bool {
        let Some(i) = self.position(pkid) else {
            return false;
        };
        let seq = match &self.inflight[i].1 {
            Flight::Sent(d) if d.qos == 2 => d.seq,
            Flight::Released { .. } => return true, // a repeated PUBREC
            _ => return false,
        };
        self.inflight[i].1 = Flight::Released { seq };
        if seq != 0 {
            self.ops.push(StoreOp::SetState {
                client_id: self.client_id.to_string(),
                seq,
                state: OutState::Released { pkid },
            });
        }
        true
    }
}
