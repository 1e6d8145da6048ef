//! The in-flight half of a session: what the writer takes next (control
//! packets, resends after a reconnect, queued messages within the
//! in-flight window), packet ids, and the client's acknowledgements
//! (MQTT-4.3.2, 4.3.3, 4.4.0-1). Must not touch sockets.
use super::{Control, Delivery, Flight, Limits, Outgoing, Session, row_bytes};
use crate::broker::message::now_ms;
use crate::broker::store::{OutState, StoreOp};

/// What a client's acknowledgement of an outgoing message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckIs {
    /// It moved the message on.
    Done,
    /// No message in flight has that packet id (a late or repeated ack).
    Unknown,
    /// The wrong acknowledgement for that message's QoS or state (PUBREC
    /// or PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREC): a
    /// protocol violation, as mosquitto treats it.
    WrongKind,
}

impl Session {
    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }

    /// Moves what the connection may send now into `out`: control packets,
    /// then (after a reconnect) everything in flight again, then queued
    /// messages while the in-flight window has room. At most `max` items.
    pub fn take(&mut self, l: &Limits, out: &mut Vec<Outgoing>, max: usize) {
        while out.len() < max
            && let Some(c) = self.pop_control()
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
        let window = l
            .max_inflight
            .min(usize::from(self.peer.receive_maximum.max(1)));
        let now = now_ms();
        while out.len() < max {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos > 0 && self.inflight.len() >= window {
                break;
            }
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(d.msg.size());
            if d.msg.expired(now) {
                self.expired_delta += 1; // MQTT-3.3.2-5: never sent stale
                self.discard(&d);
                continue;
            }
            if self
                .peer
                .max_packet
                .is_some_and(|m| d.v5_size(now) > m as usize)
            {
                self.oversize_delta += 1; // MQTT-3.1.2-25
                self.discard(&d);
                continue;
            }
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

    /// Removes a queued message that will not be sent from the store.
    fn discard(&mut self, d: &super::Delivery) {
        if d.seq != 0 {
            self.add_disk(-(row_bytes(&self.client_id, &d.msg) as i64));
            self.ops.push(StoreOp::RemoveMessage {
                client_id: self.client_id.to_string(),
                seq: d.seq,
            });
        }
    }

    fn position(&self, pkid: u16) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pkid)
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2, after PUBREC): the message is done.
    pub fn acked(&mut self, pkid: u16, comp: bool) -> AckIs {
        let Some(i) = self.position(pkid) else {
            return AckIs::Unknown;
        };
        let (seq, disk) = match &self.inflight[i].1 {
            Flight::Sent(d) if !comp && d.qos == 1 => (d.seq, row_bytes(&self.client_id, &d.msg)),
            Flight::Released { seq, disk } if comp => (*seq, *disk),
            _ => return AckIs::WrongKind,
        };
        self.inflight.remove(i);
        if seq != 0 {
            self.add_disk(-(disk as i64));
            self.ops.push(StoreOp::RemoveMessage {
                client_id: self.client_id.to_string(),
                seq,
            });
        }
        AckIs::Done
    }

    /// A 5.0 PUBREC of 0x80 or more: the client refused the QoS 2 message
    /// and the exchange ends there (its packet id is free again).
    pub fn refused_by_client(&mut self, pkid: u16) -> AckIs {
        let Some(i) = self.position(pkid) else {
            return AckIs::Unknown;
        };
        let Flight::Sent(d) = &self.inflight[i].1 else {
            return AckIs::WrongKind;
        };
        if d.qos != 2 {
            return AckIs::WrongKind;
        }
        let d = d.clone();
        self.inflight.remove(i);
        self.discard(&d);
        AckIs::Done
    }

    /// PUBREC: PUBREL is owed from now on (MQTT-4.3.3-1); a repeated one
    /// is answered again.
    pub fn received(&mut self, pkid: u16) -> AckIs {
        let Some(i) = self.position(pkid) else {
            return AckIs::Unknown;
        };
        let (seq, disk) = match &self.inflight[i].1 {
            Flight::Sent(d) if d.qos == 2 => (d.seq, row_bytes(&self.client_id, &d.msg)),
            Flight::Released { .. } => return AckIs::Done, // a repeated PUBREC
            _ => return AckIs::WrongKind,
        };
        self.inflight[i].1 = Flight::Released { seq, disk };
        if seq != 0 {
            self.ops.push(StoreOp::SetState {
                client_id: self.client_id.to_string(),
                seq,
                state: OutState::Released { pkid },
            });
        }
        AckIs::Done
    }

    /// The QoS 0 messages of a session whose connection ended are dropped:
    /// returns how many.
    /// Takes the QoS 1/2 messages a share gave this session that its
    /// client has not acknowledged (queued, or sent without PUBACK /
    /// PUBREC), for the share's other members: the session is ending.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.inflight.retain(|(_, f)| match f {
            Flight::Sent(d) if d.share.is_some() && d.qos > 0 => {
                out.push(d.clone());
                false
            }
            _ => true,
        });
        let (shared, kept): (Vec<Delivery>, Vec<Delivery>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|d| d.share.is_some() && d.qos > 0);
        self.queue = kept.into();
        self.queued_bytes = self.queue.iter().map(|d| d.msg.size()).sum();
        out.extend(shared);
        out
    }

    pub fn detach(&mut self) -> usize {
        self.attached = None;
        self.detached_at = Some(std::time::Instant::now());
        self.clear_control();
        let before = self.queue.len();
        self.queue.retain(|d| d.qos > 0);
        self.queued_bytes = self.queue.iter().map(|d| d.msg.size()).sum();
        before - self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::super::Attached;
    use super::super::tests::{L, attached, d, publishes};
    use super::*;

    #[test]
    fn the_in_flight_window_holds_qos_1_back_and_acks_open_it() {
        let mut s = attached(false);
        for p in ["1", "2", "3"] {
            s.offer(d(1, p), &L);
        }
        let mut out = Vec::new();
        s.take(&L, &mut out, 10);
        assert_eq!(publishes(&out), [(1, false), (2, false)], "window of 2");
        assert_eq!(s.acked(1, false), AckIs::Done);
        assert_eq!(
            s.acked(1, false),
            AckIs::Unknown,
            "a second PUBACK finds nothing"
        );
        out.clear();
        s.take(&L, &mut out, 10);
        assert_eq!(publishes(&out), [(3, false)]);
    }

    #[test]
    fn qos_2_goes_sent_released_completed_and_reconnect_resends_with_dup() {
        let mut s = attached(false);
        s.offer(d(2, "a"), &L);
        s.offer(d(1, "b"), &L);
        let mut out = Vec::new();
        s.take(&L, &mut out, 10);
        assert_eq!(s.received(1), AckIs::Done, "PUBREC of the QoS 2 message");
        assert_eq!(
            s.acked(1, false),
            AckIs::WrongKind,
            "a PUBACK does not complete QoS 2"
        );
        s.attach(Attached {
            generation: 2,
            kick: CancellationToken::new(),
        });
        out.clear();
        s.take(&L, &mut out, 10);
        // MQTT-4.4.0-1: PUBREL again for the released one, the other with DUP
        assert!(matches!(out[0], Outgoing::Control(Control::Ack(0x62, 1))));
        assert_eq!(publishes(&out), [(2, true)]);
        assert_eq!(s.acked(1, true), AckIs::Done, "PUBCOMP");
        assert_eq!(s.acked(2, false), AckIs::Done);
        out.clear();
        s.take(&L, &mut out, 10);
        assert!(
            out.is_empty() && s.drained(),
            "all written and acknowledged"
        );
    }

    #[test]
    fn acknowledgements_of_the_wrong_kind_are_told_apart_from_unknown_ids() {
        let mut s = attached(false);
        s.offer(d(1, "a"), &L);
        s.offer(d(2, "b"), &L);
        let mut out = Vec::new();
        s.take(&L, &mut out, 10);
        assert_eq!(s.received(1), AckIs::WrongKind, "PUBREC for QoS 1");
        assert_eq!(s.acked(1, true), AckIs::WrongKind, "PUBCOMP for QoS 1");
        assert_eq!(s.acked(2, true), AckIs::WrongKind, "PUBCOMP before PUBREC");
        assert_eq!(s.acked(9, false), AckIs::Unknown);
        assert_eq!(s.received(9), AckIs::Unknown);
    }
}
