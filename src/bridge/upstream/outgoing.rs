//! The client side of the upstream session (MQTT-4.1.0-1): the QoS 1/2
//! publishes sent and not yet acknowledged, the QoS 2 ones between
//! PUBREC and PUBCOMP, and the incoming QoS 2 packet ids PUBREC'd.
//!
//! Owns that state, keyed by packet id; the packet ids themselves are
//! chosen by the forwarder (a function of the outbox row id). Must not do
//! I/O: the link (`mod.rs`) writes what this returns.

use std::collections::{HashMap, HashSet};

use rumqttc::v5::mqttbytes::v5::{Packet, PubRel, Publish};

/// Where one outgoing QoS 1/2 message stands. `key` orders resends (the
/// outbox row id; the forwarder gives messages not from the outbox a key
/// before every row).
// most entries are `Sent` (the others live between PUBREC and PUBCOMP):
// boxing the publish would cost an allocation per message and save nothing
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    /// PUBLISH sent (or to send), no PUBACK / PUBREC yet.
    Sent { publish: Publish, key: i64 },
    /// PUBREC received; PUBREL not yet asked for by the forwarder.
    Received { key: i64 },
    /// PUBREL sent (or to send), no PUBCOMP yet.
    Released { key: i64 },
}

impl Out {
    fn key(&self) -> i64 {
        match self {
            Out::Sent { key, .. } | Out::Received { key } | Out::Released { key } => *key,
        }
    }
}

/// What a PUBREC means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubRecIs {
    /// For the forwarder: the broker has the message.
    News,
    /// Known already; the PUBREL waits for the forwarder.
    Seen,
    /// For a message released already (or unknown): its PUBREL goes again.
    ReleaseAgain,
}

/// The session state a resumed connection continues.
#[derive(Debug, Default)]
pub struct Held {
    out: HashMap<u16, Out>,
    /// Incoming QoS 2 packet ids PUBREC'd, until their PUBREL: a PUBLISH
    /// with one of them again is a duplicate, not a new command.
    incoming: HashSet<u16>,
}

impl Held {
    /// A QoS 1/2 publish to send now (or at the next resume).
    pub fn sent(&mut self, publish: Publish, key: i64) {
        self.out.insert(publish.pkid, Out::Sent { publish, key });
    }

    /// A PUBACK or PUBCOMP: the message is done; whether it was known.
    pub fn done(&mut self, pkid: u16) -> bool {
        self.out.remove(&pkid).is_some()
    }

    /// A PUBREC: what it means.
    pub fn received(&mut self, pkid: u16) -> PubRecIs {
        match self.out.get(&pkid) {
            Some(Out::Sent { key, .. }) => {
                let key = *key;
                self.out.insert(pkid, Out::Received { key });
                PubRecIs::News
            }
            Some(Out::Received { .. }) => PubRecIs::Seen,
            // released, or unknown (a process before this one sent it): a
            // PUBREL completes it at the broker
            Some(Out::Released { .. }) | None => PubRecIs::ReleaseAgain,
        }
    }

    /// The forwarder asks for the PUBREL of `pkid` (its row is marked
    /// released in the outbox).
    pub fn release(&mut self, pkid: u16, key: i64) -> Packet {
        self.out.insert(pkid, Out::Released { key });
        Packet::PubRel(PubRel::new(pkid, None))
    }

    /// The forwarder gave up on `pkid`: not sent again.
    pub fn forget(&mut self, pkid: u16) -> bool {
        self.out.remove(&pkid).is_some()
    }

    /// We PUBREC'd the incoming QoS 2 publish `pkid`.
    pub fn took(&mut self, pkid: u16) {
        self.incoming.insert(pkid);
    }

    /// Whether the incoming QoS 2 publish `pkid` was PUBREC'd already.
    pub fn has_taken(&self, pkid: u16) -> bool {
        self.incoming.contains(&pkid)
    }

    /// A PUBREL from the broker (answered with PUBCOMP whether known or
    /// not: MQTT-4.3.3-2 asks for it on a resumed session too).
    pub fn released_by_broker(&mut self, pkid: u16) {
        self.incoming.remove(&pkid);
    }

    /// The broker kept no session: nothing is resent by the link (the
    /// forwarder sends the rows again from the outbox).
    pub fn clear(&mut self) {
        self.out.clear();
        self.incoming.clear();
    }

    /// What a resumed session sends again, in key order (MQTT-4.4.0-1):
    /// each unacknowledged PUBLISH with DUP set, each PUBREL.
    pub fn resend(&self) -> Vec<Packet> {
        let mut all: Vec<(&u16, &Out)> = self.out.iter().collect();
        all.sort_by_key(|(_, o)| o.key());
        all.into_iter()
            .filter_map(|(pkid, o)| match o {
                Out::Sent { publish, .. } => {
                    let mut p = publish.clone();
                    p.dup = true;
                    Some(Packet::Publish(p))
                }
                Out::Received { .. } => None,
                Out::Released { .. } => Some(Packet::PubRel(PubRel::new(*pkid, None))),
            })
            .collect()
    }

    /// Messages the session holds (sent, received or released).
    pub fn len(&self) -> usize {
        self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;

    fn publish(pkid: u16) -> Publish {
        let mut p = Publish::new("t", QoS::ExactlyOnce, vec![1], None);
        p.pkid = pkid;
        p
    }

    #[test]
    fn a_resumed_session_resends_in_row_order_with_dup_and_pubrels() {
        let mut s = Held::default();
        s.sent(publish(9), 30);
        s.sent(publish(4), 10);
        s.sent(publish(7), 20);
        assert_eq!(s.received(4), PubRecIs::News);
        s.release(4, 10);
        assert_eq!(s.received(7), PubRecIs::News);
        assert_eq!(s.received(7), PubRecIs::Seen, "received, not yet released");
        let again = s.resend();
        assert_eq!(again.len(), 2, "{again:?}");
        assert_eq!(again[0], Packet::PubRel(PubRel::new(4, None)));
        match &again[1] {
            Packet::Publish(p) => assert!(p.dup && p.pkid == 9),
            other => panic!("{other:?}"),
        }
        // a PUBREC again for a released message: its PUBREL goes again
        assert_eq!(s.received(4), PubRecIs::ReleaseAgain);
        assert!(s.done(4));
        assert!(!s.done(4));
        s.clear();
        assert!(s.resend().is_empty());
    }
}
