//! Cross-checks of our level-5 decoder against an independent encoder,
//! rumqttc's `v5::mqttbytes::v5`: what it encodes as a client, our
//! decoder reads back with every field.

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::{QoS, v5 as r};

use super::Protocol;
use super::v5::{Packet, read, read_first};

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
