use super::*;
use bytes::Bytes;

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
