//! The packets the broker sends at MQTT 5.0: CONNACK, PUBLISH, the four
//! acknowledgements, SUBACK, UNSUBACK, DISCONNECT, each with its reason
//! code and properties (PINGRESP is [`super::write_pingresp`], the same at
//! every level), and the sizes a caller checks against the client's
//! Maximum Packet Size before sending (MQTT-3.1.2-24/25). The caller sets
//! only the properties the standard allows in each packet. Owns no state.

use bytes::{BufMut, BytesMut};

use super::props::{self, Properties, varint_len};
use super::{reason, remaining_length};

/// Fixed header, remaining length, then `body_len` bytes to come.
fn header(buf: &mut BytesMut, first: u8, body_len: usize) {
    buf.reserve(1 + varint_len(body_len) + body_len);
    buf.put_u8(first);
    remaining_length(buf, body_len);
}

/// The whole size of a packet whose remaining length is `body_len`.
fn whole(body_len: usize) -> usize {
    1 + varint_len(body_len) + body_len
}

/// CONNACK (§3.2): the session present flag, a reason code (0x00 or one
/// of 0x80 and above, then close) and the properties: Session Expiry
/// Interval, Receive Maximum, Maximum QoS, Retain Available, Maximum
/// Packet Size, Assigned Client Identifier, Topic Alias Maximum, Reason
/// String, User Property, Wildcard / Subscription Identifier / Shared
/// Subscription Available, Server Keep Alive, Response Information.
pub fn write_connack(buf: &mut BytesMut, session_present: bool, code: u8, p: &Properties) {
    header(buf, 0x20, 2 + props::wire_len(p));
    // MQTT-3.2.2-6: session present 0 with a refusal
    buf.put_u8((session_present && code < 0x80) as u8);
    buf.put_u8(code);
    props::write(buf, p);
}

/// Remaining length of a PUBLISH.
fn publish_body(topic_len: usize, payload_len: usize, qos: u8, p: &Properties) -> usize {
    2 + topic_len + if qos > 0 { 2 } else { 0 } + props::wire_len(p) + payload_len
}

/// The whole size of the PUBLISH [`write_publish`] would write: over the
/// client's Maximum Packet Size it must not be sent (MQTT-3.1.2-25).
pub fn publish_size(topic_len: usize, payload_len: usize, qos: u8, p: &Properties) -> usize {
    whole(publish_body(topic_len, payload_len, qos, p))
}

/// A PUBLISH to a client (§3.3) with its properties: Payload Format
/// Indicator, Message Expiry Interval (the remaining interval,
/// MQTT-3.3.2-6), Topic Alias (an empty `topic` with an alias the client
/// knows), Response Topic, Correlation Data, User Property, Subscription
/// Identifiers, Content Type. `pkid` is ignored at QoS 0.
#[allow(clippy::too_many_arguments)]
pub fn write_publish(
    buf: &mut BytesMut,
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
    p: &Properties,
) {
    super::encode::publish(buf, topic, payload, qos, retain, dup, pkid, Some(p));
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) with a
/// reason code and Reason String / User Property; reason and properties
/// are left out when the reason is 0x00 and there are none (§3.4.2.1),
/// the properties alone when there are none (§3.4.2.2.1).
pub fn write_ack(buf: &mut BytesMut, first: u8, pkid: u16, code: u8, p: &Properties) {
    if code == reason::SUCCESS && p.is_empty() {
        return super::write_ack(buf, first, pkid);
    }
    if p.is_empty() {
        header(buf, first, 3);
        buf.put_u16(pkid);
        buf.put_u8(code);
        return;
    }
    header(buf, first, 3 + props::wire_len(p));
    buf.put_u16(pkid);
    buf.put_u8(code);
    props::write(buf, p);
}

/// SUBACK (0x90) or UNSUBACK (0xB0): packet id, properties (Reason String,
/// User Property), one reason code per filter in the order they came.
fn write_codes(buf: &mut BytesMut, first: u8, pkid: u16, codes: &[u8], p: &Properties) {
    header(buf, first, 2 + props::wire_len(p) + codes.len());
    buf.put_u16(pkid);
    props::write(buf, p);
    buf.put_slice(codes);
}

/// SUBACK (§3.9): a granted QoS (0x00-0x02) or an error (0x80 and above)
/// per filter, in the order of the SUBSCRIBE (MQTT-3.9.3-1).
pub fn write_suback(buf: &mut BytesMut, pkid: u16, codes: &[u8], p: &Properties) {
    write_codes(buf, 0x90, pkid, codes, p);
}

/// UNSUBACK (§3.11): 0x00, 0x11 (no subscription existed) or an error
/// per filter, in the order of the UNSUBSCRIBE (MQTT-3.11.3-1).
pub fn write_unsuback(buf: &mut BytesMut, pkid: u16, codes: &[u8], p: &Properties) {
    write_codes(buf, 0xB0, pkid, codes, p);
}

/// DISCONNECT from the broker (§3.14) with a reason code and an optional
/// Reason String (never a secret). The reason code is always written:
/// some clients (rumqttc) cannot read a DISCONNECT without one.
pub fn write_disconnect(buf: &mut BytesMut, code: u8, reason_string: Option<&str>) {
    let p = Properties {
        reason_string: reason_string.map(str::to_owned),
        ..Properties::default()
    };
    header(buf, 0xE0, 1 + props::wire_len(&p));
    buf.put_u8(code);
    props::write(buf, &p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::{QoS, v5 as r};

    fn bytes(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        f(&mut b);
        b.to_vec()
    }

    fn reason_string(s: &str) -> Properties {
        Properties {
            reason_string: Some(s.into()),
            ..Properties::default()
        }
    }

    #[test]
    fn acks_leave_out_reason_and_properties_when_0x00_and_none_section_3_4_2_1() {
        let none = Properties::default();
        assert_eq!(bytes(|b| write_ack(b, 0x40, 5, 0, &none)), [0x40, 2, 0, 5]);
        assert_eq!(
            bytes(|b| write_ack(b, 0x62, 5, 0x92, &none)),
            [0x62, 3, 0, 5, 0x92]
        );
        assert_eq!(
            bytes(|b| write_ack(b, 0x50, 5, 0x87, &reason_string("no"))),
            [0x50, 9, 0, 5, 0x87, 5, 0x1F, 0, 2, b'n', b'o']
        );
        // properties with reason 0x00 keep the reason byte
        assert_eq!(
            bytes(|b| write_ack(b, 0x70, 1, 0, &reason_string(""))),
            [0x70, 7, 0, 1, 0, 3, 0x1F, 0, 0]
        );
    }

    #[test]
    fn connack_carries_reason_and_properties_and_no_session_with_a_refusal_mqtt_3_2_2_6() {
        let p = Properties {
            receive_maximum: Some(10),
            ..Properties::default()
        };
        assert_eq!(
            bytes(|b| write_connack(b, true, 0, &p)),
            [0x20, 6, 1, 0, 3, 0x21, 0, 10]
        );
        assert_eq!(
            bytes(|b| write_connack(
                b,
                true,
                reason::BAD_AUTHENTICATION_METHOD,
                &Properties::default()
            )),
            [0x20, 3, 0, 0x8C, 0]
        );
    }

    #[test]
    fn suback_and_unsuback_carry_one_code_per_filter() {
        let none = Properties::default();
        assert_eq!(
            bytes(|b| write_suback(b, 1, &[0, 2, 0x87], &none)),
            [0x90, 6, 0, 1, 0, 0, 2, 0x87]
        );
        assert_eq!(
            bytes(|b| write_unsuback(b, 2, &[0, 0x11], &none)),
            [0xB0, 5, 0, 2, 0, 0, 0x11]
        );
    }

    #[test]
    fn disconnect_always_carries_its_reason_code() {
        assert_eq!(
            bytes(|b| write_disconnect(b, 0x8E, None)),
            [0xE0, 2, 0x8E, 0]
        );
        assert_eq!(
            bytes(|b| write_disconnect(b, 0x81, Some("bad"))),
            [0xE0, 8, 0x81, 6, 0x1F, 0, 3, b'b', b'a', b'd']
        );
    }

    #[test]
    fn publish_writes_properties_before_the_payload_and_its_size_is_exact() {
        let p = Properties {
            topic_alias: Some(4),
            ..Properties::default()
        };
        assert_eq!(
            bytes(|b| write_publish(b, b"t", b"hi", 1, false, false, 9, &p)),
            [0x32, 11, 0, 1, b't', 0, 9, 3, 0x23, 0, 4, b'h', b'i']
        );
        let p = Properties {
            message_expiry_interval: Some(10),
            subscription_identifiers: vec![1, 300],
            correlation_data: Some(Bytes::from_static(b"c")),
            ..Properties::default()
        };
        for payload_len in [0, 100, 20_000] {
            let payload = vec![7u8; payload_len];
            let out = bytes(|b| write_publish(b, b"a/b", &payload, 2, true, false, 3, &p));
            assert_eq!(
                out.len(),
                publish_size(3, payload_len, 2, &p),
                "{payload_len}"
            );
        }
    }

    // Cross-checks of our level-5 encoders: what they write, rumqttc's
    // `v5::mqttbytes::v5` decoder reads with every field.

    fn kv(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.into(), v.into())]
    }

    /// Our encoder writes into a buffer; rumqttc's decoder reads it.
    fn theirs(f: impl FnOnce(&mut BytesMut)) -> r::Packet {
        let mut buf = BytesMut::new();
        f(&mut buf);
        let p = r::Packet::read(&mut buf, None).expect("rumqttc decodes it");
        assert!(buf.is_empty(), "rumqttc read the whole packet");
        p
    }

    #[test]
    fn our_connack_reads_in_rumqttc_with_every_property() {
        let p = Properties {
            session_expiry_interval: Some(7200),
            receive_maximum: Some(100),
            maximum_qos: Some(1),
            retain_available: Some(1),
            maximum_packet_size: Some(1 << 20),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(10),
            reason_string: Some("welcome".into()),
            user_properties: kv("k", "v"),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(0),
            server_keep_alive: Some(60),
            response_information: Some("resp/".into()),
            ..Properties::default()
        };
        let r::Packet::ConnAck(ack) = theirs(|b| write_connack(b, true, reason::SUCCESS, &p))
        else {
            panic!("not a CONNACK");
        };
        assert!(ack.session_present);
        assert_eq!(ack.code, r::ConnectReturnCode::Success);
        let got = ack.properties.expect("properties");
        let want = r::ConnAckProperties {
            session_expiry_interval: Some(7200),
            receive_max: Some(100),
            max_qos: Some(1),
            retain_available: Some(1),
            max_packet_size: Some(1 << 20),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_max: Some(10),
            reason_string: Some("welcome".into()),
            user_properties: kv("k", "v"),
            wildcard_subscription_available: Some(1),
            subscription_identifiers_available: Some(1),
            shared_subscription_available: Some(0),
            server_keep_alive: Some(60),
            response_information: Some("resp/".into()),
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        };
        assert_eq!(got, want);
        let r::Packet::ConnAck(refused) = theirs(|b| {
            write_connack(
                b,
                false,
                reason::BAD_AUTHENTICATION_METHOD,
                &Properties::default(),
            )
        }) else {
            panic!("not a CONNACK");
        };
        assert_eq!(refused.code, r::ConnectReturnCode::BadAuthenticationMethod);
    }

    #[test]
    fn our_publish_reads_in_rumqttc_with_every_property() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            topic_alias: Some(3),
            response_topic: Some("reply/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![
                ("fieldgate-replay".into(), "1".into()),
                ("fieldgate-ts".into(), "1700000000000".into()),
            ],
            subscription_identifiers: vec![1, 300, 268_435_455],
            content_type: Some("application/json".into()),
            ..Properties::default()
        };
        let r::Packet::Publish(m) =
            theirs(|b| write_publish(b, b"t/x", b"payload", 1, true, true, 11, &p))
        else {
            panic!("not a PUBLISH");
        };
        assert_eq!(
            (&m.topic[..], &m.payload[..], m.qos, m.retain, m.dup, m.pkid),
            (
                &b"t/x"[..],
                &b"payload"[..],
                QoS::AtLeastOnce,
                true,
                true,
                11
            )
        );
        let want = r::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            topic_alias: Some(3),
            response_topic: Some("reply/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: p.user_properties.clone(),
            subscription_identifiers: vec![1, 300, 268_435_455],
            content_type: Some("application/json".into()),
        };
        assert_eq!(m.properties, Some(want));
    }

    #[test]
    fn our_acks_suback_unsuback_and_disconnect_read_in_rumqttc() {
        let none = Properties::default();
        let why = Properties {
            reason_string: Some("acl".into()),
            ..Properties::default()
        };
        match theirs(|b| write_ack(b, 0x40, 5, reason::NOT_AUTHORIZED, &why)) {
            r::Packet::PubAck(a) => {
                assert_eq!((a.pkid, a.reason), (5, r::PubAckReason::NotAuthorized));
                assert_eq!(
                    a.properties.and_then(|p| p.reason_string).as_deref(),
                    Some("acl")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(theirs(|b| write_ack(b, 0x40, 6, 0, &none)), r::Packet::PubAck(a) if a.pkid == 6 && a.reason == r::PubAckReason::Success)
        );
        assert!(
            matches!(theirs(|b| write_ack(b, 0x50, 7, 0x10, &none)), r::Packet::PubRec(a) if a.reason == r::PubRecReason::NoMatchingSubscribers)
        );
        assert!(
            matches!(theirs(|b| write_ack(b, 0x62, 8, 0, &none)), r::Packet::PubRel(a) if a.pkid == 8)
        );
        assert!(
            matches!(theirs(|b| write_ack(b, 0x70, 9, 0x92, &none)), r::Packet::PubComp(a) if a.reason == r::PubCompReason::PacketIdentifierNotFound)
        );
        match theirs(|b| write_suback(b, 3, &[0, 1, 2, 0x87], &why)) {
            r::Packet::SubAck(s) => {
                use r::SubscribeReasonCode::*;
                assert_eq!(s.pkid, 3);
                assert_eq!(
                    s.return_codes,
                    vec![
                        Success(QoS::AtMostOnce),
                        Success(QoS::AtLeastOnce),
                        Success(QoS::ExactlyOnce),
                        NotAuthorized
                    ]
                );
                assert_eq!(
                    s.properties.and_then(|p| p.reason_string).as_deref(),
                    Some("acl")
                );
            }
            other => panic!("{other:?}"),
        }
        match theirs(|b| write_unsuback(b, 4, &[0, 0x11], &none)) {
            r::Packet::UnsubAck(u) => {
                assert_eq!(u.pkid, 4);
                assert_eq!(
                    u.reasons,
                    vec![
                        r::UnsubAckReason::Success,
                        r::UnsubAckReason::NoSubscriptionExisted
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        match theirs(|b| write_disconnect(b, reason::SESSION_TAKEN_OVER, Some("taken over"))) {
            r::Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, r::DisconnectReasonCode::SessionTakenOver);
                assert_eq!(
                    d.properties.and_then(|p| p.reason_string).as_deref(),
                    Some("taken over")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(theirs(|b| write_disconnect(b, reason::KEEP_ALIVE_TIMEOUT, None)), r::Packet::Disconnect(d) if d.reason_code == r::DisconnectReasonCode::KeepAliveTimeout)
        );
    }
}
