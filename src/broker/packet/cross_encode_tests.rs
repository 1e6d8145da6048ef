//! Cross-checks of our level-5 encoders: what they write, rumqttc's
//! `v5::mqttbytes::v5` decoder reads with every field.

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::{QoS, v5 as r};

use super::encode5::{
    write_ack, write_connack, write_disconnect, write_publish, write_suback, write_unsuback,
};
use super::props::Properties;
use super::reason;

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
    let r::Packet::ConnAck(ack) = theirs(|b| write_connack(b, true, reason::SUCCESS, &p)) else {
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
