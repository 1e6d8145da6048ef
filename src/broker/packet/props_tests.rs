use super::*;
use crate::broker::packet::fixtures::{cat, props, sp, user};

fn read_in(ctx: In, p: &[u8]) -> Result<Properties, DecodeError> {
    let mut b = Bytes::from(props(p));
    let r = read(&mut b, ctx);
    if r.is_ok() {
        assert!(b.is_empty(), "properties left bytes behind");
    }
    r
}

fn protocol(r: Result<Properties, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::Protocol(_)))
}

fn malformed(r: Result<Properties, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::Invalid(_)))
}

#[test]
fn every_connect_property_decodes() {
    let p = cat(&[
        &[0x11, 0, 0, 0x0E, 0x10],
        &[0x21, 0, 10],
        &[0x27, 0, 0, 0x10, 0],
        &[0x22, 0, 5],
        &[0x19, 1],
        &[0x17, 0],
        &user(b"k", b"v"),
        &user(b"k", b"w"),
        &sp(0x15, b"SCRAM-SHA-1"),
        &sp(0x16, b"\x01\x02"),
    ]);
    let got = read_in(In::Connect, &p).expect("decodes");
    assert_eq!(got.session_expiry_interval, Some(3600));
    assert_eq!(got.receive_maximum, Some(10));
    assert_eq!(got.maximum_packet_size, Some(4096));
    assert_eq!(got.topic_alias_maximum, Some(5));
    assert_eq!(got.request_response_information, Some(1));
    assert_eq!(got.request_problem_information, Some(0));
    assert_eq!(
        got.user_properties,
        vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        "User Property may repeat, in order"
    );
    assert_eq!(got.authentication_method.as_deref(), Some("SCRAM-SHA-1"));
    assert_eq!(got.authentication_data.as_deref(), Some(&b"\x01\x02"[..]));
}

#[test]
fn a_duplicate_property_is_a_protocol_error_mqtt_2_2_2_2() {
    let twice = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    assert!(protocol(read_in(In::Connect, &twice)));
    let alias_twice = [0x23, 0, 1, 0x23, 0, 2];
    assert!(protocol(read_in(In::Publish, &alias_twice)));
    let sub_id_twice = [0x0B, 1, 0x0B, 2];
    assert!(protocol(read_in(In::Subscribe, &sub_id_twice)));
}

#[test]
fn a_property_not_allowed_in_the_packet_is_malformed_section_2_2_2_2() {
    assert!(
        malformed(read_in(In::Connect, &[0x23, 0, 1])),
        "topic alias in CONNECT"
    );
    assert!(
        malformed(read_in(In::Publish, &[0x11, 0, 0, 0, 1])),
        "session expiry in PUBLISH"
    );
    assert!(
        malformed(read_in(In::Connect, &sp(0x1F, b"why"))),
        "reason string in CONNECT"
    );
    assert!(
        malformed(read_in(In::Publish, &[0x18, 0, 0, 0, 1])),
        "will delay in PUBLISH"
    );
    assert!(
        malformed(read_in(In::Will, &[0x11, 0, 0, 0, 1])),
        "session expiry in a will"
    );
    assert!(
        malformed(read_in(In::Connect, &[0x24, 1])),
        "maximum QoS (CONNACK only)"
    );
    assert!(
        malformed(read_in(In::Unsubscribe, &[0x0B, 1])),
        "subscription id in UNSUBSCRIBE"
    );
    assert!(
        malformed(read_in(In::Ack, &sp(0x1C, b"h"))),
        "server reference in PUBACK"
    );
    for unknown in [0x00, 0x04, 0x2B, 0x7F] {
        assert!(
            malformed(read_in(In::Connect, &[unknown, 0])),
            "identifier {unknown:#x}"
        );
    }
}

#[test]
fn zero_values_are_protocol_errors_section_3_1_2_11_3_section_3_1_2_11_4_mqtt_3_3_2_8_section_3_8_2_1_2()
 {
    // §3.1.2.11.3, §3.1.2.11.4, MQTT-3.3.2-8, §3.8.2.1.2
    assert!(
        protocol(read_in(In::Connect, &[0x21, 0, 0])),
        "receive maximum 0"
    );
    assert!(
        protocol(read_in(In::Connect, &[0x27, 0, 0, 0, 0])),
        "maximum packet size 0"
    );
    assert!(
        protocol(read_in(In::Publish, &[0x23, 0, 0])),
        "topic alias 0"
    );
    assert!(
        protocol(read_in(In::Subscribe, &[0x0B, 0])),
        "subscription identifier 0"
    );
    assert_eq!(
        read_in(In::Connect, &[0x22, 0, 0]).map(|p| p.topic_alias_maximum),
        Ok(Some(0)),
        "topic alias maximum 0 is allowed (no aliases)"
    );
}

#[test]
fn flags_other_than_0_or_1_are_protocol_errors_section_3_3_2_3_2_section_3_1_2_11_6_section_3_1_2_11_7()
 {
    // §3.3.2.3.2, §3.1.2.11.6, §3.1.2.11.7
    assert!(
        protocol(read_in(In::Publish, &[0x01, 2])),
        "payload format indicator 2"
    );
    assert!(
        protocol(read_in(In::Will, &[0x01, 0xFF])),
        "will payload format indicator"
    );
    assert!(
        protocol(read_in(In::Connect, &[0x19, 2])),
        "request response information 2"
    );
    assert!(
        protocol(read_in(In::Connect, &[0x17, 2])),
        "request problem information 2"
    );
}

#[test]
fn strings_and_string_pairs_must_be_utf8_without_nul_mqtt_1_5_4_1_mqtt_1_5_4_2_mqtt_1_5_7_1() {
    assert!(
        malformed(read_in(In::Publish, &sp(0x03, b"\xED\xA0\x80"))),
        "surrogate"
    );
    assert!(
        malformed(read_in(In::Publish, &sp(0x03, b"\xFF"))),
        "not UTF-8"
    );
    assert!(
        malformed(read_in(In::Publish, &sp(0x03, b"a\0b"))),
        "U+0000"
    );
    assert!(
        malformed(read_in(In::Publish, &user(b"k\0", b"v"))),
        "U+0000 in a key"
    );
    assert!(
        malformed(read_in(In::Publish, &user(b"k", b"\xC0\x80"))),
        "overlong NUL in a value"
    );
    assert!(
        malformed(read_in(In::Ack, &sp(0x1F, b"\xFE"))),
        "reason string"
    );
}

#[test]
fn a_response_topic_with_wildcards_is_malformed_mqtt_3_3_2_14() {
    assert!(malformed(read_in(In::Publish, &sp(0x08, b"reply/+"))));
    assert!(malformed(read_in(In::Will, &sp(0x08, b"reply/#"))));
    assert_eq!(
        read_in(In::Publish, &sp(0x08, b"reply/1")).map(|p| p.response_topic),
        Ok(Some("reply/1".into()))
    );
}

#[test]
fn authentication_data_without_a_method_is_a_protocol_error_section_3_1_2_11_10() {
    assert!(protocol(read_in(In::Connect, &sp(0x16, b"x"))));
    assert!(protocol(read_in(In::Auth, &sp(0x16, b"x"))));
}

#[test]
fn variable_byte_integers_over_4_bytes_or_not_minimal_are_malformed_mqtt_1_5_5_1() {
    let vbi = |raw: &[u8]| varint(&mut Bytes::copy_from_slice(raw));
    assert!(matches!(
        vbi(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        Err(DecodeError::Invalid(_))
    ));
    assert!(
        matches!(vbi(&[0x80, 0x00]), Err(DecodeError::Invalid(_))),
        "0 in 2 bytes"
    );
    assert!(
        matches!(vbi(&[0xFF, 0x80, 0x00]), Err(DecodeError::Invalid(_))),
        "127 in 3 bytes"
    );
    assert!(
        matches!(vbi(&[0x80]), Err(DecodeError::Invalid(_))),
        "ends early"
    );
    // a subscription identifier in 2 bytes where 1 does
    assert!(malformed(read_in(In::Subscribe, &[0x0B, 0x81, 0x00])));
    // a property length in 5 bytes
    let mut b = Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(matches!(
        read(&mut b, In::Connect),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn variable_byte_integers_round_trip_at_every_boundary() {
    for n in [
        0u32, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
    ] {
        let mut buf = BytesMut::new();
        put_varint(&mut buf, n);
        assert_eq!(buf.len(), varint_len(n as usize), "{n}");
        assert_eq!(varint(&mut buf.freeze()), Ok(n));
    }
}

#[test]
fn property_lengths_that_overrun_are_malformed_section_2_2_2_1() {
    // the property length says 9, 3 bytes follow
    let mut b = Bytes::from_static(&[9, 0x23, 0, 1]);
    assert!(matches!(
        read(&mut b, In::Publish),
        Err(DecodeError::Invalid(_))
    ));
    // a value that runs past the property length (length 2, alias needs 3)
    let mut b = Bytes::from_static(&[2, 0x23, 0, 1]);
    assert!(matches!(
        read(&mut b, In::Publish),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn encoded_properties_read_back_whole() {
    let p = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("application/json".into()),
        response_topic: Some("r/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x00id")),
        topic_alias: Some(3),
        user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
        ..Properties::default()
    };
    let mut buf = BytesMut::new();
    write(&mut buf, &p);
    assert_eq!(buf.len(), wire_len(&p));
    assert_eq!(read(&mut buf.freeze(), In::Publish), Ok(p));
    let mut empty = BytesMut::new();
    write(&mut empty, &Properties::default());
    assert_eq!(
        &empty[..],
        &[0],
        "no properties: a property length of 0 (MQTT-2.2.2-1)"
    );
}
