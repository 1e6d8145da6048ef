//! MQTT 5.0 packets a client may send, decoded strictly (every check a
//! server owns; each violation a [`DecodeError`] whose
//! [`DecodeError::reason_code`] is the DISCONNECT reason to send), and the
//! two entry points a connection uses whatever its level: [`read_first`]
//! (the CONNECT, at level 3, 4 or 5) and [`read`] (what follows, by the
//! level the CONNECT gave). 3.1/3.1.1 packets are decoded by the 3.1.1
//! decoder byte for byte and handed back in this module's types (the
//! `From` impl in `lift`). Owns no state: checks that need the
//! connection (topic alias over the maximum, a session expiry set at
//! DISCONNECT after 0 at CONNECT, AUTH without a method) are the caller's.

use bytes::{Buf, Bytes, BytesMut};

pub use super::connect5::{Connect, Will};
use super::props::{self, In, Properties};
use super::{DecodeError, Protocol, frame, pkid, reason, string, u8};
use crate::broker::topics::{valid_filter, valid_topic};

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    /// Empty when the client sent a Topic Alias alone: the caller maps it.
    pub topic: String,
    pub pkid: u16,
    pub payload: Bytes,
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub pkid: u16,
    /// 0x00 when the client left it out (remaining length 2).
    pub reason: u8,
    /// Reason String, User Property.
    pub properties: Properties,
}

/// One filter of a SUBSCRIBE with its options (section 3.8.3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// As sent, `$share/{group}/` prefix included.
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained at subscribe, 1: only if new, 2: never.
    pub retain_handling: u8,
}

/// What a client may send, at any level (3.1/3.1.1 packets lifted).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe {
        pkid: u16,
        filters: Vec<Subscription>,
        /// Subscription Identifier (at most one), User Property.
        properties: Properties,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
        properties: Properties,
    },
    PingReq,
    /// Reason 0x00 when the client sent none; Session Expiry Interval,
    /// Reason String, User Property, Server Reference.
    Disconnect {
        reason: u8,
        properties: Properties,
    },
    /// Level 5 only: the broker has no enhanced authentication.
    Auth {
        reason: u8,
        properties: Properties,
    },
}

/// The first packet of a connection: a CONNECT at level 5 (name `MQTT`)
/// is decoded here; anything else by the 3.1.1 decoder exactly as
/// [`super::read`] does (levels 3 and 4, its refusals, and packets that
/// are not a CONNECT, which the caller refuses). The level is in
/// [`Connect::protocol`].
pub fn read_first(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, DecodeError> {
    let minimal = minimal_length(buf);
    let Some((byte1, body)) = frame(buf, max)? else {
        return Ok(None);
    };
    if byte1 >> 4 == 1 && body.starts_with(b"\x00\x04MQTT\x05") {
        if !minimal {
            return Err(DecodeError::Invalid("remaining length not minimal")); // MQTT-1.5.5-1
        }
        return decode(byte1, body).map(Some);
    }
    super::decode(byte1, body).map(|p| Some(p.into()))
}

/// A packet after the CONNECT of a connection at `protocol`: 3.1/3.1.1 by
/// the 3.1.1 decoder byte for byte, 5.0 by this one. `max` bounds the
/// remaining length, as in [`super::read`]; over it: 0x95.
pub fn read(
    buf: &mut BytesMut,
    max: usize,
    protocol: Protocol,
) -> Result<Option<Packet>, DecodeError> {
    if protocol != Protocol::V5 {
        return super::read(buf, max).map(|p| p.map(Packet::from));
    }
    if !minimal_length(buf) {
        return Err(DecodeError::Invalid("remaining length not minimal")); // MQTT-1.5.5-1
    }
    match frame(buf, max)? {
        Some((byte1, body)) => decode(byte1, body).map(Some),
        None => Ok(None),
    }
}

/// Whether the remaining length at the front of `buf` (as far as it has
/// come) uses the fewest bytes: a last byte of 0 after others is not
/// minimal (MQTT-1.5.5-1; the 3.1.1 decoder does not check it).
fn minimal_length(buf: &[u8]) -> bool {
    let len = buf.get(1..).unwrap_or_default();
    let len = &len[..len.len().min(4)];
    match len.iter().position(|b| b & 0x80 == 0) {
        Some(last) => last == 0 || len[last] != 0,
        None => true,
    }
}

/// Decodes one level-5 packet: `byte1` and the body after the remaining
/// length.
fn decode(byte1: u8, mut b: Bytes) -> Result<Packet, DecodeError> {
    let flags = byte1 & 0x0F;
    let want_flags = |f: u8| super::flags_are(flags, f);
    let packet = match byte1 >> 4 {
        1 => {
            want_flags(0)?;
            Packet::Connect(Box::new(super::connect5::connect(&mut b)?))
        }
        3 => Packet::Publish(publish(flags, &mut b)?),
        4 => {
            want_flags(0)?;
            Packet::PubAck(ack(&mut b, reason::valid_puback)?)
        }
        5 => {
            want_flags(0)?;
            Packet::PubRec(ack(&mut b, reason::valid_puback)?)
        }
        6 => {
            want_flags(0b0010)?;
            Packet::PubRel(ack(&mut b, reason::valid_pubrel)?)
        }
        7 => {
            want_flags(0)?;
            Packet::PubComp(ack(&mut b, reason::valid_pubrel)?)
        }
        8 => {
            want_flags(0b0010)?; // MQTT-3.8.1-1
            subscribe(&mut b)?
        }
        10 => {
            want_flags(0b0010)?; // MQTT-3.10.1-1
            unsubscribe(&mut b)?
        }
        12 => {
            want_flags(0)?;
            Packet::PingReq
        }
        14 => {
            want_flags(0)?; // MQTT-3.14.1-1
            let (reason, properties) = reason_and_props(&mut b, In::Disconnect)?;
            if !reason::valid_disconnect(reason) {
                return Err(DecodeError::Protocol("DISCONNECT reason code"));
            }
            Packet::Disconnect { reason, properties }
        }
        15 => {
            want_flags(0)?; // MQTT-3.15.1-1
            let (reason, properties) = reason_and_props(&mut b, In::Auth)?;
            if !reason::valid_auth(reason) {
                return Err(DecodeError::Protocol("AUTH reason code"));
            }
            Packet::Auth { reason, properties }
        }
        // CONNACK, SUBACK, UNSUBACK, PINGRESP go from server to client
        2 | 9 | 11 | 13 => return Err(DecodeError::Protocol("packet type only a server sends")),
        // 0 is reserved (§2.1.2)
        _ => return Err(DecodeError::Invalid("reserved packet type")),
    };
    if b.has_remaining() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(packet)
}

/// A reason code and properties that may both be left out (DISCONNECT
/// §3.14.2.1, AUTH §3.15.2.1: remaining length 0 means 0x00; a reason
/// alone means no properties).
fn reason_and_props(b: &mut Bytes, ctx: In) -> Result<(u8, Properties), DecodeError> {
    if !b.has_remaining() {
        return Ok((reason::SUCCESS, Properties::default()));
    }
    let code = u8(b)?;
    let properties = if b.has_remaining() {
        props::read(b, ctx)?
    } else {
        Properties::default()
    };
    Ok((code, properties))
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP: packet id, then the reason code and
/// properties, each of which may be left out (§3.4.2.1).
fn ack(b: &mut Bytes, valid: fn(u8) -> bool) -> Result<Ack, DecodeError> {
    let pkid = pkid(b)?;
    let (reason, properties) = reason_and_props(b, In::Ack)?;
    if !valid(reason) {
        return Err(DecodeError::Protocol(
            "reason code not valid for this packet",
        ));
    }
    Ok(Ack {
        pkid,
        reason,
        properties,
    })
}

fn publish(flags: u8, b: &mut Bytes) -> Result<Publish, DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        return Err(DecodeError::Invalid("QoS 3")); // MQTT-3.3.1-4
    }
    let dup = flags & 0b1000 != 0;
    if dup && qos == 0 {
        return Err(DecodeError::Invalid("DUP on a QoS 0 PUBLISH")); // MQTT-3.3.1-2
    }
    let topic = string(b)?; // MQTT-3.3.2-1, MQTT-1.5.4-1/2
    if !topic.is_empty() && !valid_topic(&topic) {
        return Err(DecodeError::Invalid("topic name")); // MQTT-3.3.2-2
    }
    let pkid = if qos > 0 { pkid(b)? } else { 0 }; // MQTT-2.2.1-3
    let properties = props::read(b, In::Publish)?;
    if !properties.subscription_identifiers.is_empty() {
        // MQTT-3.3.4-6: a client never sends a Subscription Identifier
        return Err(DecodeError::Protocol(
            "subscription identifier from a client",
        ));
    }
    if topic.is_empty() && properties.topic_alias.is_none() {
        // §3.3.2.1: "It is a Protocol Error if the Topic Name is zero
        // length and there is no Topic Alias"
        return Err(DecodeError::Protocol(
            "empty topic name without a topic alias",
        ));
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        pkid,
        payload: b.split_to(b.remaining()),
        properties,
    })
}

/// A filter at level 5: the wildcard rules (MQTT-4.7.1-1/2/3, MQTT-4.7.3-1)
/// and, for `$share/`, a share name of at least one character without
/// `/`, `+`, `#`, then `/` and a filter (MQTT-4.8.2-1/2). Malformed if not.
fn filter(b: &mut Bytes) -> Result<String, DecodeError> {
    let f = string(b)?; // MQTT-3.8.3-1
    if !valid_filter(&f) {
        return Err(DecodeError::Invalid("topic filter"));
    }
    if let Some(rest) = f.strip_prefix("$share/") {
        match rest.split_once('/') {
            Some((name, inner))
                if !name.is_empty() && !name.contains(['+', '#']) && !inner.is_empty() => {}
            _ => return Err(DecodeError::Invalid("shared subscription filter")),
        }
    }
    Ok(f)
}

fn subscribe(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let pkid = pkid(b)?; // MQTT-2.2.1-3
    let properties = props::read(b, In::Subscribe)?;
    let mut filters = Vec::new();
    while b.has_remaining() {
        let f = filter(b)?;
        let opts = u8(b)?;
        if opts & 0b1100_0000 != 0 {
            return Err(DecodeError::Invalid("reserved subscription option bits")); // MQTT-3.8.3-5
        }
        let qos = opts & 0b11;
        let retain_handling = (opts >> 4) & 0b11;
        // §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has
        // the value 3", "... to send a Retain Handling value of 3"
        if qos == 3 {
            return Err(DecodeError::Protocol("subscription QoS 3"));
        }
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        let no_local = opts & 0b100 != 0;
        if no_local && f.starts_with("$share/") {
            return Err(DecodeError::Protocol("no local on a shared subscription")); // MQTT-3.8.3-4
        }
        filters.push(Subscription {
            filter: f,
            qos,
            no_local,
            retain_as_published: opts & 0b1000 != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without filters")); // MQTT-3.8.3-2
    }
    Ok(Packet::Subscribe {
        pkid,
        filters,
        properties,
    })
}

fn unsubscribe(b: &mut Bytes) -> Result<Packet, DecodeError> {
    let pkid = pkid(b)?; // MQTT-2.2.1-3
    let properties = props::read(b, In::Unsubscribe)?;
    let mut filters = Vec::new();
    while b.has_remaining() {
        filters.push(filter(b)?); // MQTT-3.10.3-1
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without filters")); // MQTT-3.10.3-2
    }
    Ok(Packet::Unsubscribe {
        pkid,
        filters,
        properties,
    })
}

#[cfg(test)]
#[path = "v5_tests.rs"]
mod tests;
