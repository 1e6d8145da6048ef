//! 3.1/3.1.1 packets as [`v5`] packets, so a connection handles every level
//! with one set of types: no properties, reason codes 0x00, subscription
//! options with the QoS alone. The 3.1.1 decoder is not touched.

use super::props::Properties;
use super::v5::{self, Ack};
use super::{Packet, reason};

fn ack(pkid: u16) -> Ack {
    Ack {
        pkid,
        reason: reason::SUCCESS,
        properties: Properties::default(),
    }
}

impl From<Packet> for v5::Packet {
    fn from(p: Packet) -> Self {
        match p {
            Packet::Connect(c) => {
                let c = *c;
                v5::Packet::Connect(Box::new(v5::Connect {
                    protocol: c.protocol,
                    bridge: c.bridge,
                    clean_start: c.clean_session,
                    keep_alive: c.keep_alive,
                    client_id: c.client_id,
                    will: c.will.map(|w| v5::Will {
                        topic: w.topic,
                        payload: w.payload,
                        qos: w.qos,
                        retain: w.retain,
                        properties: Properties::default(),
                    }),
                    username: c.username,
                    password: c.password,
                    properties: Properties::default(),
                }))
            }
            Packet::Publish(p) => v5::Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: p.qos,
                retain: p.retain,
                topic: p.topic,
                pkid: p.pkid,
                payload: p.payload,
                properties: Properties::default(),
            }),
            Packet::PubAck(id) => v5::Packet::PubAck(ack(id)),
            Packet::PubRec(id) => v5::Packet::PubRec(ack(id)),
            Packet::PubRel(id) => v5::Packet::PubRel(ack(id)),
            Packet::PubComp(id) => v5::Packet::PubComp(ack(id)),
            Packet::Subscribe { pkid, filters } => v5::Packet::Subscribe {
                pkid,
                filters: filters
                    .into_iter()
                    .map(|(filter, qos)| v5::Subscription {
                        filter,
                        qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    })
                    .collect(),
                properties: Properties::default(),
            },
            Packet::Unsubscribe { pkid, filters } => v5::Packet::Unsubscribe {
                pkid,
                filters,
                properties: Properties::default(),
            },
            Packet::PingReq => v5::Packet::PingReq,
            Packet::Disconnect => v5::Packet::Disconnect {
                reason: reason::NORMAL_DISCONNECTION,
                properties: Properties::default(),
            },
        }
    }
}
