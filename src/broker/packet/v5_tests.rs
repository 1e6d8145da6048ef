use super::*;
use crate::broker::packet::fixtures::{cat, frame, props, s, sp, user};

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
