use super::*;

fn frame(first: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(first);
    remaining_length(&mut b, body.len());
    b.put_slice(body);
    b
}

fn s(v: &[u8]) -> Vec<u8> {
    let mut o = (v.len() as u16).to_be_bytes().to_vec();
    o.extend_from_slice(v);
    o
}

fn connect_body(name: &[u8], level: u8, flags: u8, id: &[u8]) -> Vec<u8> {
    let mut b = s(name);
    b.push(level);
    b.push(flags);
    b.extend_from_slice(&[0, 0]); // keep-alive 0
    b.extend(s(id));
    b
}

fn decode_one(first: u8, body: &[u8]) -> Result<Option<Packet>, DecodeError> {
    read(&mut frame(first, body), 1 << 20)
}

#[test]
fn connect_3_1_1_and_3_1_decode_with_keep_alive_0() {
    match decode_one(0x10, &connect_body(b"MQTT", 4, 0x02, b"c1")) {
        Ok(Some(Packet::Connect(c))) => {
            assert_eq!(
                (c.protocol, c.keep_alive, c.client_id.as_str()),
                (Protocol::V311, 0, "c1")
            );
            assert!(c.clean_session);
        }
        other => panic!("{other:?}"),
    }
    match decode_one(0x10, &connect_body(b"MQIsdp", 3, 0x02, b"c1")) {
        Ok(Some(Packet::Connect(c))) => assert_eq!(c.protocol, Protocol::V31),
        other => panic!("{other:?}"),
    }
}

#[test]
fn connect_refusals_and_violations() {
    // MQTT-3.1.2-2: level 5 gets CONNACK 1
    assert_eq!(
        decode_one(0x10, &connect_body(b"MQTT", 5, 0x02, b"c")),
        Err(DecodeError::Refuse(connack::BAD_PROTOCOL))
    );
    // MQTT-3.1.2-1: another name closes without CONNACK
    assert!(matches!(
        decode_one(0x10, &connect_body(b"MQTX", 4, 2, b"c")),
        Err(DecodeError::Invalid(_))
    ));
    // MQTT-3.1.2-3: reserved flag
    assert!(matches!(
        decode_one(0x10, &connect_body(b"MQTT", 4, 3, b"c")),
        Err(DecodeError::Invalid(_))
    ));
    // MQTT-3.1.3-8: empty id with clean_session 0
    assert_eq!(
        decode_one(0x10, &connect_body(b"MQTT", 4, 0, b"")),
        Err(DecodeError::Refuse(connack::ID_REJECTED))
    );
    // MQTT-3.1.2-22: password without user name
    assert!(matches!(
        decode_one(0x10, &connect_body(b"MQTT", 4, 0x42, b"c")),
        Err(DecodeError::Invalid(_))
    ));
    // MQTT-3.1.2-11: will QoS without the will flag
    assert!(matches!(
        decode_one(0x10, &connect_body(b"MQTT", 4, 0x0A, b"c")),
        Err(DecodeError::Invalid(_))
    ));
    // MQTT 3.1: client ids of at most 23 bytes
    assert_eq!(
        decode_one(0x10, &connect_body(b"MQIsdp", 3, 2, &[b'a'; 24])),
        Err(DecodeError::Refuse(connack::ID_REJECTED))
    );
}

#[test]
fn publish_checks_topic_utf8_qos_and_packet_id() {
    let mut ok = s(b"a/b");
    ok.extend_from_slice(&[0, 7]);
    ok.extend_from_slice(b"hi");
    match decode_one(0x33, &ok) {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(
                (p.qos, p.retain, p.pkid, &p.payload[..]),
                (1, true, 7, &b"hi"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    let bad = |first: u8, topic: &[u8], pkid: &[u8]| {
        let mut b = s(topic);
        b.extend_from_slice(pkid);
        matches!(decode_one(first, &b), Err(DecodeError::Invalid(_)))
    };
    assert!(
        bad(0x30, b"a/+", b""),
        "wildcard in a topic name (MQTT-3.3.2-2)"
    );
    assert!(bad(0x30, b"", b""), "empty topic");
    assert!(bad(0x30, b"a\0b", b""), "U+0000 (MQTT-1.5.3-2)");
    assert!(
        bad(0x30, &[0xED, 0xA0, 0x80], b""),
        "a surrogate (MQTT-1.5.3-1)"
    );
    assert!(bad(0x36, b"a", b"\0\x01"), "QoS 3 (MQTT-3.3.1-4)");
    assert!(bad(0x32, b"a", b"\0\0"), "packet id 0 (MQTT-2.3.1-1)");
}

#[test]
fn subscribe_and_fixed_header_flags() {
    let mut sub = vec![0, 1];
    sub.extend(s(b"a/#"));
    sub.push(1);
    assert!(matches!(
        decode_one(0x82, &sub),
        Ok(Some(Packet::Subscribe { pkid: 1, .. }))
    ));
    assert!(
        decode_one(0x80, &sub).is_err(),
        "SUBSCRIBE without 0b0010 (MQTT-3.8.1-1)"
    );
    let mut opts = sub.clone();
    *opts.last_mut().unwrap() = 0x05;
    assert!(
        decode_one(0x82, &opts).is_err(),
        "reserved option bits (MQTT-3.8.3-4)"
    );
    assert!(
        decode_one(0x82, &[0, 1]).is_err(),
        "no filters (MQTT-3.8.3-3)"
    );
    let mut bad = vec![0, 1];
    bad.extend(s(b"a/#/b"));
    bad.push(0);
    assert!(
        decode_one(0x82, &bad).is_err(),
        "`#` not last (MQTT-4.7.1-2)"
    );
    assert!(decode_one(0xC1, &[]).is_err(), "PINGREQ with flags");
    assert_eq!(decode_one(0xC0, &[]), Ok(Some(Packet::PingReq)));
}

#[test]
fn partial_frames_wait_and_oversized_ones_are_refused_from_the_header() {
    let mut b = frame(0xC0, &[]);
    let mut half = b.split_to(1);
    assert_eq!(read(&mut half, 100), Ok(None));
    // a PUBLISH announcing 200 MB is refused before its body arrives
    let mut huge = BytesMut::from(&[0x30u8, 0x80, 0xDA, 0xC4, 0x5F][..]);
    assert!(matches!(
        read(&mut huge, 1024),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(read(&mut b, 100), Ok(None), "one byte short");
}

#[test]
fn publish_encoding_round_trips_through_rumqttc() {
    let mut b = BytesMut::new();
    write_publish(&mut b, b"t/x", b"payload", 2, true, true, 9);
    match rumqttc::mqttbytes::v4::Packet::read(&mut b, 1024) {
        Ok(rumqttc::mqttbytes::v4::Packet::Publish(p)) => {
            assert_eq!(
                (p.topic.as_str(), p.pkid, p.dup, p.retain),
                ("t/x", 9, true, true)
            );
            assert_eq!(&p.payload[..], b"payload");
        }
        other => panic!("{other:?}"),
    }
}
