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
mod tests {
    use super::*;
    use crate::broker::packet::fixtures::{cat, frame, props, s, sp, user};
    use rumqttc::v5::mqttbytes::{QoS, v5 as r};

    fn one(first: u8, body: &[u8]) -> Result<Option<Packet>, DecodeError> {
        read(&mut frame(first, body), 1 << 20, Protocol::V5)
    }

    fn malformed(first: u8, body: &[u8]) -> bool {
        matches!(one(first, body), Err(DecodeError::Invalid(_)))
    }

    fn protocol(first: u8, body: &[u8]) -> bool {
        matches!(one(first, body), Err(DecodeError::Protocol(_)))
    }

    #[test]
    fn publish_decodes_with_its_properties() {
        let p = cat(&[
            &[0x01, 1],
            &[0x02, 0, 0, 0, 30],
            &[0x23, 0, 2],
            &sp(0x08, b"re/1"),
            &sp(0x09, b"\x01"),
            &sp(0x03, b"json"),
            &user(b"k", b"v"),
        ]);
        let body = cat(&[&s(b"a/b"), &[0, 7], &props(&p), b"payload"]);
        let Ok(Some(Packet::Publish(m))) = one(0x3B, &body) else {
            panic!("{:?}", one(0x3B, &body))
        };
        assert_eq!((m.dup, m.qos, m.retain, m.pkid), (true, 1, true, 7));
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("a/b", &b"payload"[..]));
        assert_eq!(m.properties.payload_format_indicator, Some(1));
        assert_eq!(m.properties.message_expiry_interval, Some(30));
        assert_eq!(m.properties.topic_alias, Some(2));
        assert_eq!(m.properties.response_topic.as_deref(), Some("re/1"));
        assert_eq!(m.properties.correlation_data.as_deref(), Some(&b"\x01"[..]));
        assert_eq!(m.properties.content_type.as_deref(), Some("json"));
        assert_eq!(m.properties.user_properties, vec![("k".into(), "v".into())]);
        // an alias alone: the topic is left empty for the caller to map
        let aliased = cat(&[&s(b""), &props(&[0x23, 0, 2]), b"x"]);
        assert!(matches!(one(0x30, &aliased), Ok(Some(Packet::Publish(m))) if m.topic.is_empty()));
    }

    #[test]
    fn publish_checks_mqtt_3_3_1_2_mqtt_3_3_1_4_mqtt_3_3_2_2_mqtt_3_3_4_6_mqtt_2_2_1_3() {
        let q0 = |t: &[u8], p: &[u8]| cat(&[&s(t), &props(p)]);
        assert!(
            malformed(0x38, &q0(b"a", &[])),
            "DUP on QoS 0 (MQTT-3.3.1-2)"
        );
        assert!(
            malformed(0x36, &cat(&[&s(b"a"), &[0, 1], &props(&[])])),
            "QoS 3 (MQTT-3.3.1-4)"
        );
        assert!(
            malformed(0x30, &q0(b"a/#", &[])),
            "wildcard in the topic (MQTT-3.3.2-2)"
        );
        assert!(
            malformed(0x30, &q0(b"\xFF", &[])),
            "topic not UTF-8 (MQTT-1.5.4-1)"
        );
        assert!(
            malformed(0x32, &cat(&[&s(b"a"), &[0, 0], &props(&[])])),
            "packet id 0 (MQTT-2.2.1-3)"
        );
        assert!(
            protocol(0x30, &q0(b"a", &[0x0B, 1])),
            "subscription id from a client (MQTT-3.3.4-6)"
        );
        assert!(
            protocol(0x30, &q0(b"", &[])),
            "empty topic without an alias (§3.3.2.1)"
        );
        assert!(
            protocol(0x30, &q0(b"a", &[0x23, 0, 0])),
            "topic alias 0 (MQTT-3.3.2-8)"
        );
        assert!(
            malformed(0x30, &s(b"a")),
            "no property length (MQTT-2.2.2-1)"
        );
    }

    #[test]
    fn acknowledgements_decode_with_and_without_reason_and_properties_section_3_4_2_1() {
        let ack = |p: Result<Option<Packet>, DecodeError>| match p {
            Ok(Some(
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a),
            )) => a,
            other => panic!("{other:?}"),
        };
        let a = ack(one(0x40, &[0, 5]));
        assert_eq!((a.pkid, a.reason, a.properties.is_empty()), (5, 0, true));
        let a = ack(one(0x50, &[0, 5, 0x10]));
        assert_eq!((a.pkid, a.reason), (5, reason::NO_MATCHING_SUBSCRIBERS));
        let a = ack(one(
            0x62,
            &cat(&[&[0, 5, 0x92], &props(&sp(0x1F, b"gone"))]),
        ));
        assert_eq!(
            (a.reason, a.properties.reason_string.as_deref()),
            (0x92, Some("gone"))
        );
        let a = ack(one(0x70, &cat(&[&[0, 5, 0], &props(&user(b"k", b"v"))])));
        assert_eq!(a.properties.user_properties.len(), 1);
        assert!(matches!(
            one(0x70, &[0, 5, 0x92]),
            Ok(Some(Packet::PubComp(_)))
        ));
    }

    #[test]
    fn acknowledgement_checks_section_3_4_2_1_section_3_6_2_1_mqtt_2_1_3_1_mqtt_2_2_1_3() {
        assert!(
            protocol(0x40, &[0, 5, 0x92]),
            "PUBACK with a PUBREL reason code (§3.4.2.1)"
        );
        assert!(
            protocol(0x62, &[0, 5, 0x10]),
            "PUBREL with a PUBACK reason code (§3.6.2.1)"
        );
        assert!(protocol(0x50, &[0, 5, 0x05]), "an unknown reason code");
        assert!(
            malformed(0x60, &[0, 5]),
            "PUBREL without 0b0010 (MQTT-2.1.3-1)"
        );
        assert!(malformed(0x41, &[0, 5]), "PUBACK with flags (MQTT-2.1.3-1)");
        assert!(malformed(0x40, &[0, 0]), "packet id 0 (MQTT-2.2.1-3)");
        assert!(
            malformed(0x40, &cat(&[&[0, 5, 0], &props(&[0x23, 0, 1])])),
            "topic alias in PUBACK"
        );
        assert!(malformed(0x40, &[0, 5, 0, 0, 9]), "trailing bytes");
    }

    #[test]
    fn subscribe_decodes_options_and_the_subscription_identifier() {
        let p = cat(&[&[0x0B, 0x80, 0x01], &user(b"k", b"v")]);
        let body = cat(&[
            &[0, 9],
            &props(&p),
            &s(b"a/+"),
            &[0b0010_1110],
            &s(b"$share/g/b/#"),
            &[0x01],
        ]);
        let Ok(Some(Packet::Subscribe {
            pkid,
            filters,
            properties,
        })) = one(0x82, &body)
        else {
            panic!("{:?}", one(0x82, &body));
        };
        assert_eq!(pkid, 9);
        assert_eq!(properties.subscription_identifiers, vec![128]);
        assert_eq!(properties.user_properties, vec![("k".into(), "v".into())]);
        let f = &filters[0];
        assert_eq!(
            (
                f.filter.as_str(),
                f.qos,
                f.no_local,
                f.retain_as_published,
                f.retain_handling
            ),
            ("a/+", 2, true, true, 2)
        );
        assert_eq!(
            (
                filters[1].filter.as_str(),
                filters[1].qos,
                filters[1].no_local
            ),
            ("$share/g/b/#", 1, false)
        );
    }

    #[test]
    fn subscribe_checks_mqtt_3_8_1_1_mqtt_3_8_3_2_mqtt_3_8_3_4_mqtt_3_8_3_5_mqtt_4_8_2_1_mqtt_4_8_2_2()
     {
        let sub = |p: &[u8], f: &[u8], o: u8| cat(&[&[0, 1], &props(p), &s(f), &[o]]);
        assert!(one(0x82, &sub(&[], b"a", 0)).is_ok());
        assert!(malformed(0x80, &sub(&[], b"a", 0)), "flags (MQTT-3.8.1-1)");
        assert!(
            protocol(0x82, &cat(&[&[0, 1], &props(&[])])),
            "no filters (MQTT-3.8.3-2)"
        );
        assert!(
            protocol(0x82, &sub(&[], b"a", 0b0011_0000)),
            "retain handling 3 (§3.8.3.1)"
        );
        assert!(protocol(0x82, &sub(&[], b"a", 3)), "QoS 3 (§3.8.3.1)");
        assert!(
            malformed(0x82, &sub(&[], b"a", 0b0100_0000)),
            "reserved bit 6 (MQTT-3.8.3-5)"
        );
        assert!(
            malformed(0x82, &sub(&[], b"a", 0b1000_0000)),
            "reserved bit 7 (MQTT-3.8.3-5)"
        );
        assert!(
            protocol(0x82, &sub(&[], b"$share/g/a", 0b100)),
            "no local on a shared subscription (MQTT-3.8.3-4)"
        );
        for bad in [
            &b"$share//a"[..],
            b"$share/g",
            b"$share/g/",
            b"$share/g+/a",
            b"$share/#/a",
        ] {
            assert!(
                malformed(0x82, &sub(&[], bad, 0)),
                "{} (MQTT-4.8.2-1/2)",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            malformed(0x82, &sub(&[], b"a/#/b", 0)),
            "`#` not last (MQTT-4.7.1-1)"
        );
        assert!(
            malformed(0x82, &sub(&[], b"", 0)),
            "empty filter (MQTT-4.7.3-1)"
        );
        assert!(
            protocol(0x82, &sub(&[0x0B, 0], b"a", 0)),
            "subscription identifier 0"
        );
        assert!(
            protocol(0x82, &sub(&[0x0B, 1, 0x0B, 2], b"a", 0)),
            "two subscription identifiers"
        );
        assert!(
            malformed(0x82, &cat(&[&[0, 0], &props(&[]), &s(b"a"), &[0]])),
            "packet id 0 (MQTT-2.2.1-3)"
        );
    }

    #[test]
    fn unsubscribe_decodes_and_checks_mqtt_3_10_1_1_mqtt_3_10_3_2() {
        let body = cat(&[
            &[0, 4],
            &props(&user(b"k", b"v")),
            &s(b"a/#"),
            &s(b"$share/g/b"),
        ]);
        match one(0xA2, &body) {
            Ok(Some(Packet::Unsubscribe {
                pkid,
                filters,
                properties,
            })) => {
                assert_eq!(
                    (pkid, filters),
                    (4, vec!["a/#".to_string(), "$share/g/b".to_string()])
                );
                assert_eq!(properties.user_properties.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(malformed(0xA0, &body), "flags (MQTT-3.10.1-1)");
        assert!(
            protocol(0xA2, &cat(&[&[0, 4], &props(&[])])),
            "no filters (MQTT-3.10.3-2)"
        );
        assert!(
            malformed(0xA2, &cat(&[&[0, 4], &props(&[0x0B, 1]), &s(b"a")])),
            "subscription id in UNSUBSCRIBE"
        );
    }

    #[test]
    fn disconnect_decodes_reason_and_session_expiry_and_checks_section_3_14_2_1_mqtt_3_14_1_1() {
        let d = |body: &[u8]| match one(0xE0, body) {
            Ok(Some(Packet::Disconnect { reason, properties })) => (reason, properties),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            d(&[]),
            (0, Properties::default()),
            "remaining length 0: normal disconnection"
        );
        assert_eq!(d(&[0x04]).0, reason::DISCONNECT_WITH_WILL_MESSAGE);
        let p = cat(&[&[0x11, 0, 0, 0, 0], &sp(0x1F, b"bye")]);
        let (code, props_) = d(&cat(&[&[0x00], &props(&p)]));
        assert_eq!(
            (
                code,
                props_.session_expiry_interval,
                props_.reason_string.as_deref()
            ),
            (0, Some(0), Some("bye"))
        );
        assert!(malformed(0xE1, &[]), "flags (MQTT-3.14.1-1)");
        assert!(
            protocol(0xE0, &[0x05]),
            "an unknown reason code (§3.14.2.1)"
        );
        assert!(
            malformed(0xE0, &cat(&[&[0], &props(&[0x23, 0, 1])])),
            "topic alias in DISCONNECT"
        );
    }

    #[test]
    fn auth_decodes_and_checks_section_3_15_2_1_mqtt_3_15_1_1() {
        let body = cat(&[&[0x19], &props(&cat(&[&sp(0x15, b"m"), &sp(0x16, b"d")]))]);
        match one(0xF0, &body) {
            Ok(Some(Packet::Auth { reason, properties })) => {
                assert_eq!(
                    (reason, properties.authentication_method.as_deref()),
                    (0x19, Some("m"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(protocol(0xF0, &[0x01]), "an unknown reason code");
        assert!(malformed(0xF1, &[]), "flags (MQTT-3.15.1-1)");
    }

    #[test]
    fn framing_checks_mqtt_1_5_5_1_and_reason_codes_0x81_0x82_0x95() {
        assert_eq!(one(0xC0, &[]), Ok(Some(Packet::PingReq)));
        assert!(
            protocol(0x20, &[0, 0]),
            "CONNACK from a client (§2.1.2: server to client)"
        );
        assert!(protocol(0x90, &[0, 1, 0, 0]), "SUBACK from a client");
        assert!(protocol(0xD0, &[]), "PINGRESP from a client");
        assert!(malformed(0x00, &[]), "reserved packet type 0 (§2.1.2)");
        // MQTT-1.5.5-1: a remaining length of 0 written in two bytes
        let mut b = BytesMut::from(&[0xC0u8, 0x80, 0x00][..]);
        assert!(matches!(
            read(&mut b, 100, Protocol::V5),
            Err(DecodeError::Invalid(_))
        ));
        // half a packet waits
        let mut half = BytesMut::from(&[0x40u8, 2, 0][..]);
        assert_eq!(read(&mut half, 100, Protocol::V5), Ok(None));
        // over the maximum: refused from the header, DISCONNECT 0x95
        let mut huge = BytesMut::from(&[0x30u8, 0x80, 0xDA, 0xC4, 0x5F][..]);
        let e = read(&mut huge, 1024, Protocol::V5).expect_err("too large");
        assert_eq!(e.reason_code(), reason::PACKET_TOO_LARGE);
        assert_eq!(
            DecodeError::Invalid("x").reason_code(),
            reason::MALFORMED_PACKET
        );
        assert_eq!(
            DecodeError::Protocol("x").reason_code(),
            reason::PROTOCOL_ERROR
        );
    }

    #[test]
    fn a_3_1_1_connection_keeps_the_3_1_1_decoder() {
        // DUP on QoS 0 is a 5.0 check only: 3.1.1 decodes it as before
        let body = cat(&[&s(b"a"), b"x"]);
        assert!(matches!(
            read(&mut frame(0x38, &body), 100, Protocol::V311),
            Ok(Some(Packet::Publish(_)))
        ));
        assert!(matches!(
            read(&mut frame(0x38, &body), 100, Protocol::V5),
            Err(DecodeError::Invalid(_))
        ));
        // a 3.1.1 SUBSCRIBE lifted: the QoS alone, no options
        let sub = cat(&[&[0, 1], &s(b"a"), &[1]]);
        match read(&mut frame(0x82, &sub), 100, Protocol::V311) {
            Ok(Some(Packet::Subscribe { filters, .. })) => {
                assert_eq!(
                    (
                        filters[0].qos,
                        filters[0].no_local,
                        filters[0].retain_handling
                    ),
                    (1, false, 0)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(&mut frame(0xE0, &[]), 100, Protocol::V31),
            Ok(Some(Packet::Disconnect { reason: 0, .. }))
        ));
    }

    // Cross-checks of our level-5 decoder against an independent encoder,
    // rumqttc's `v5::mqttbytes::v5`: what it encodes as a client, our
    // decoder reads back with every field.

    fn kv(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.into(), v.into())]
    }

    /// rumqttc writes `p`; our level-5 decoder reads it.
    fn ours(p: r::Packet) -> Packet {
        let mut buf = BytesMut::new();
        p.write(&mut buf, None).expect("rumqttc encodes");
        let got = match p {
            r::Packet::Connect(..) => read_first(&mut buf, 1 << 20),
            _ => read(&mut buf, 1 << 20, Protocol::V5),
        };
        assert!(buf.is_empty(), "the whole packet was read");
        got.expect("our decoder accepts it")
            .expect("a whole packet")
    }

    #[test]
    fn rumqttc_connect_with_properties_will_and_login_reads_back_whole() {
        let connect = r::Connect {
            keep_alive: 30,
            client_id: "cross".into(),
            clean_start: false,
            properties: Some(r::ConnectProperties {
                session_expiry_interval: Some(600),
                receive_maximum: Some(20),
                max_packet_size: Some(65_536),
                topic_alias_max: Some(8),
                request_response_info: Some(1),
                request_problem_info: Some(0),
                user_properties: kv("a", "b"),
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(b"\x01")),
            }),
        };
        let will = r::LastWill::new(
            "w/t",
            b"gone".to_vec(),
            QoS::AtLeastOnce,
            true,
            Some(r::LastWillProperties {
                delay_interval: Some(5),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("r/1".into()),
                correlation_data: Some(Bytes::from_static(b"x")),
                user_properties: kv("k", "v"),
            }),
        );
        let login = r::Login::new("user", "pass");
        let Packet::Connect(c) = ours(r::Packet::Connect(connect, Some(will), Some(login))) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.protocol, Protocol::V5);
        assert_eq!(
            (c.keep_alive, c.client_id.as_str(), c.clean_start),
            (30, "cross", false)
        );
        let p = &c.properties;
        assert_eq!(p.session_expiry_interval, Some(600));
        assert_eq!(p.receive_maximum, Some(20));
        assert_eq!(p.maximum_packet_size, Some(65_536));
        assert_eq!(p.topic_alias_maximum, Some(8));
        assert_eq!(
            (
                p.request_response_information,
                p.request_problem_information
            ),
            (Some(1), Some(0))
        );
        assert_eq!(p.user_properties, kv("a", "b"));
        assert_eq!(p.authentication_method.as_deref(), Some("SCRAM"));
        assert_eq!(p.authentication_data.as_deref(), Some(&b"\x01"[..]));
        let w = c.will.expect("will");
        assert_eq!(
            (w.topic.as_str(), &w.payload[..], w.qos, w.retain),
            ("w/t", &b"gone"[..], 1, true)
        );
        let wp = &w.properties;
        assert_eq!(
            (wp.will_delay_interval, wp.payload_format_indicator),
            (Some(5), Some(1))
        );
        assert_eq!(wp.message_expiry_interval, Some(60));
        assert_eq!(wp.content_type.as_deref(), Some("text/plain"));
        assert_eq!(wp.response_topic.as_deref(), Some("r/1"));
        assert_eq!(wp.correlation_data.as_deref(), Some(&b"x"[..]));
        assert_eq!(wp.user_properties, kv("k", "v"));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("user"), Some(&b"pass"[..]))
        );
    }

    #[test]
    fn rumqttc_publish_with_properties_reads_back_whole() {
        let publish = r::Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: Bytes::from_static(b"a/b"),
            pkid: 7,
            payload: Bytes::from_static(b"{\"v\":1}"),
            properties: Some(r::PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(9),
                topic_alias: Some(2),
                response_topic: Some("rt".into()),
                correlation_data: Some(Bytes::from_static(b"id")),
                user_properties: kv("fieldgate-ts", "1"),
                subscription_identifiers: vec![],
                content_type: Some("application/json".into()),
            }),
        };
        let Packet::Publish(m) = ours(r::Packet::Publish(publish)) else {
            panic!("not a PUBLISH");
        };
        assert_eq!((m.dup, m.qos, m.retain, m.pkid), (true, 2, true, 7));
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("a/b", &b"{\"v\":1}"[..])
        );
        let p = &m.properties;
        assert_eq!(
            (
                p.payload_format_indicator,
                p.message_expiry_interval,
                p.topic_alias
            ),
            (Some(1), Some(9), Some(2))
        );
        assert_eq!(p.response_topic.as_deref(), Some("rt"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"id"[..]));
        assert_eq!(p.user_properties, kv("fieldgate-ts", "1"));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn rumqttc_subscribe_and_unsubscribe_read_back_whole() {
        let filter = r::Filter {
            path: "a/#".into(),
            qos: QoS::AtLeastOnce,
            nolocal: true,
            preserve_retain: true,
            retain_forward_rule: r::RetainForwardRule::OnNewSubscribe,
        };
        let subscribe = r::Subscribe {
            pkid: 3,
            filters: vec![filter, r::Filter::new("$share/g/x", QoS::ExactlyOnce)],
            properties: Some(r::SubscribeProperties {
                id: Some(42),
                user_properties: kv("k", "v"),
            }),
        };
        let Packet::Subscribe {
            pkid,
            filters,
            properties,
        } = ours(r::Packet::Subscribe(subscribe))
        else {
            panic!("not a SUBSCRIBE");
        };
        assert_eq!(pkid, 3);
        assert_eq!(
            (
                properties.subscription_identifiers,
                properties.user_properties
            ),
            (vec![42], kv("k", "v"))
        );
        let f = &filters[0];
        assert_eq!(
            (
                f.filter.as_str(),
                f.qos,
                f.no_local,
                f.retain_as_published,
                f.retain_handling
            ),
            ("a/#", 1, true, true, 1)
        );
        assert_eq!(
            (filters[1].filter.as_str(), filters[1].qos),
            ("$share/g/x", 2)
        );
        let unsubscribe = r::Unsubscribe {
            pkid: 4,
            filters: vec!["a/#".into(), "b".into()],
            properties: Some(r::UnsubscribeProperties {
                user_properties: kv("u", "1"),
            }),
        };
        let Packet::Unsubscribe {
            pkid,
            filters,
            properties,
        } = ours(r::Packet::Unsubscribe(unsubscribe))
        else {
            panic!("not an UNSUBSCRIBE");
        };
        assert_eq!(
            (pkid, filters, properties.user_properties),
            (4, vec!["a/#".into(), "b".into()], kv("u", "1"))
        );
    }

    #[test]
    fn rumqttc_acks_and_disconnect_read_back_whole() {
        let why = |s: &str| Some(s.to_string());
        let ack = |p: Packet| match p {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                (a.pkid, a.reason, a.properties.reason_string)
            }
            other => panic!("{other:?}"),
        };
        let puback = r::PubAck {
            pkid: 5,
            reason: r::PubAckReason::NotAuthorized,
            properties: Some(r::PubAckProperties {
                reason_string: why("acl"),
                user_properties: vec![],
            }),
        };
        assert_eq!(ack(ours(r::Packet::PubAck(puback))), (5, 0x87, why("acl")));
        assert_eq!(
            ack(ours(r::Packet::PubAck(r::PubAck::new(6, None)))),
            (6, 0, None)
        );
        let pubrec = r::PubRec {
            pkid: 7,
            reason: r::PubRecReason::NoMatchingSubscribers,
            properties: None,
        };
        assert_eq!(ack(ours(r::Packet::PubRec(pubrec))), (7, 0x10, None));
        let pubrel = r::PubRel {
            pkid: 8,
            reason: r::PubRelReason::PacketIdentifierNotFound,
            properties: Some(r::PubRelProperties {
                reason_string: why("?"),
                user_properties: kv("k", "v"),
            }),
        };
        assert_eq!(ack(ours(r::Packet::PubRel(pubrel))), (8, 0x92, why("?")));
        let pubcomp = r::PubComp {
            pkid: 9,
            reason: r::PubCompReason::Success,
            properties: None,
        };
        assert_eq!(ack(ours(r::Packet::PubComp(pubcomp))), (9, 0, None));
        let disconnect = r::Disconnect {
            reason_code: r::DisconnectReasonCode::DisconnectWithWillMessage,
            properties: Some(r::DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: why("bye"),
                user_properties: kv("k", "v"),
                server_reference: None,
            }),
        };
        let Packet::Disconnect {
            reason: code,
            properties,
        } = ours(r::Packet::Disconnect(disconnect))
        else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(
            (
                code,
                properties.session_expiry_interval,
                properties.reason_string
            ),
            (0x04, Some(0), why("bye"))
        );
        assert_eq!(properties.user_properties, kv("k", "v"));
        assert_eq!(ours(r::Packet::PingReq(r::PingReq)), Packet::PingReq);
    }
}
