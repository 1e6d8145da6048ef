//! What goes into and out of a session: a [`Delivery`] (one message for
//! one subscriber, with its MQTT 5 properties and size at the client's
//! level), the [`Control`] packets it owes, what the writer takes next
//! ([`Outgoing`]), the result of offering a delivery ([`Offer`]), the
//! client's limits ([`Peer`]) and what a stored row costs ([`row_bytes`]).
//! Owns these values only; must not hold session state.

use crate::broker::message::Message;
use crate::broker::packet::encode5;
use crate::broker::packet::props::Properties;

/// Bytes a stored message row costs beyond its topic and payload: the
/// client id stored with it, its index entry, the other columns.
pub(super) const ROW_OVERHEAD: u64 = 48;

/// What a persistent session's message costs on disk (row and index
/// entry), counted against `max_spooled_bytes` and `max_store_bytes`.
pub fn row_bytes(client_id: &str, msg: &Message) -> u64 {
    msg.size() as u64 + 2 * client_id.len() as u64 + ROW_OVERHEAD
}

/// One message for one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Message,
    /// Delivered QoS: min(publish, subscription) (MQTT-3.8.4-6).
    pub qos: u8,
    /// Set only for retained messages sent because of a SUBSCRIBE (MQTT-3.3.1-8/9).
    pub retain: bool,
    /// Store row of a persistent session's QoS 1/2 message; 0 otherwise.
    pub seq: u64,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub sub_ids: Vec<u32>,
    /// The shared subscription it was given to this member by: handed to
    /// another member if this session ends before it is acknowledged.
    /// Not stored (a restored row stays with its session).
    pub share: Option<std::sync::Arc<str>>,
}

/// Packets a connection owes its client, written before messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70, UNSUBACK 0xB0
    /// (3.1.1), each a success.
    Ack(u8, u16),
    /// The same with an MQTT 5 reason code (written as [`Control::Ack`]
    /// to a 3.1.1 client).
    AckCode(u8, u16, u8),
    /// One code per filter: a granted QoS or an MQTT 5 reason code of 0x80
    /// and above (0x80 to a 3.1.1 client).
    SubAck(u16, Vec<u8>),
    /// MQTT 5: one reason code per filter (a 3.1.1 UNSUBACK has none).
    UnsubAck(u16, Vec<u8>),
    PingResp,
}

impl Control {
    /// Memory it holds while queued.
    pub(super) fn footprint(&self) -> usize {
        std::mem::size_of::<Control>()
            + match self {
                Control::SubAck(_, codes) | Control::UnsubAck(_, codes) => codes.len(),
                _ => 0,
            }
    }
}

/// What the writer sends next.
#[derive(Debug)]
pub enum Outgoing {
    Control(Control),
    Publish { d: Delivery, pkid: u16, dup: bool },
}

/// The result of offering a delivery to a session.
#[derive(Debug)]
pub enum Offer {
    /// In memory, or on disk for a persistent session (`durable`).
    Queued { durable: bool },
    /// The memory queue is full: the caller may wait for room.
    Full(Delivery),
    /// Not queued (offline session and QoS 0).
    Dropped,
    /// Not queued: the session's spool quota is reached.
    SpoolFull,
}

/// What the client at the other end asked for in its CONNECT (MQTT 5
/// properties; a 3.1.1 client gets the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// MQTT 5: packets are written with properties and reason codes.
    pub v5: bool,
    /// Receive Maximum: QoS 1/2 messages in flight to it at most
    /// (MQTT-3.3.4-9), under `max_inflight`.
    pub receive_maximum: u16,
    /// Maximum Packet Size: a message that would be larger is dropped for
    /// this client and counted (MQTT-3.1.2-25).
    pub max_packet: Option<u32>,
    /// Topic Alias Maximum: aliases the broker may use towards it.
    pub topic_alias_max: u16,
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            v5: false,
            receive_maximum: u16::MAX,
            max_packet: None,
            topic_alias_max: 0,
        }
    }
}

impl Delivery {
    /// Its properties in a PUBLISH to an MQTT 5 client: what the publisher
    /// sent, passed on unchanged (MQTT-3.3.2-4/-15/-16/-17/-20), the expiry
    /// interval left at `now_ms` (MQTT-3.3.2-6) and the matching
    /// subscription identifiers (MQTT-3.3.4-3).
    pub fn properties(&self, now_ms: u64) -> Properties {
        let mut p = Properties {
            message_expiry_interval: self.msg.remaining_secs(now_ms).map(|s| s.max(1)),
            subscription_identifiers: self.sub_ids.clone(),
            ..Properties::default()
        };
        if let Some(m) = self.msg.props.as_deref() {
            p.payload_format_indicator = m.payload_format;
            p.content_type = m.content_type.clone();
            p.response_topic = m.response_topic.clone();
            p.correlation_data = m.correlation_data.clone();
            p.user_properties = m.user.clone();
        }
        p
    }

    /// Its size as an MQTT 5 PUBLISH, for the client's maximum.
    pub fn v5_size(&self, now_ms: u64) -> usize {
        let p = self.properties(now_ms);
        encode5::publish_size(self.msg.topic.len(), self.msg.payload.len(), self.qos, &p)
    }
}
