//! The MQTT 5.0 CONNECT (section 3.1): its type (also what a 3.1/3.1.1
//! CONNECT is lifted into) and its strict decoder: flags, keep-alive,
//! properties, client id, will with its properties, user name and
//! password. Owns no state: what the server answers (CONNACK 0x8C to an
//! authentication method, an assigned id for an empty one) is the
//! caller's.

use bytes::{Buf, Bytes};

use super::props::{self, In, Properties};
use super::{DecodeError, Protocol, binary, need, string, u8, u16};
use crate::broker::topics::valid_topic;

#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Will Delay Interval, Payload Format Indicator, Message Expiry
    /// Interval, Content Type, Response Topic, Correlation Data, User
    /// Property.
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub protocol: Protocol,
    /// 3.1/3.1.1 only: level 0x83 / 0x84 (mosquitto's `try_private`).
    pub bridge: bool,
    /// Clean Start at level 5, Clean Session before.
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Session Expiry Interval, Receive Maximum, Maximum Packet Size, Topic
    /// Alias Maximum, Request Response / Problem Information, User
    /// Property, Authentication Method / Data (the broker answers a method
    /// with CONNACK 0x8C: no enhanced authentication).
    pub properties: Properties,
}

/// A level-5 CONNECT (name and level already matched by [`super::v5::read_first`]).
pub(super) fn connect(b: &mut Bytes) -> Result<Connect, DecodeError> {
    need(b, 7)?;
    // MQTT-3.1.2-1/2: name `MQTT`, level 5 (a second CONNECT, which the
    // caller refuses, comes here without `read_first`'s match)
    if !b.starts_with(b"\x00\x04MQTT\x05") {
        return Err(DecodeError::Invalid("protocol name or level"));
    }
    b.advance(7);
    let flags = u8(b)?;
    if flags & 1 != 0 {
        return Err(DecodeError::Invalid("CONNECT reserved flag")); // MQTT-3.1.2-3
    }
    let keep_alive = u16(b)?;
    let properties = props::read(b, In::Connect)?;
    let client_id = string(b)?; // MQTT-3.1.3-4
    let will_flag = flags & 0b100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    let will = if will_flag {
        if will_qos == 3 {
            return Err(DecodeError::Invalid("will QoS 3")); // MQTT-3.1.2-12
        }
        let properties = props::read(b, In::Will)?;
        let topic = string(b)?;
        if !valid_topic(&topic) {
            return Err(DecodeError::Invalid("will topic")); // MQTT-3.1.3-11, MQTT-3.3.2-2
        }
        Some(Will {
            topic,
            payload: binary(b)?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        if will_qos != 0 || will_retain {
            return Err(DecodeError::Invalid("will QoS or retain without a will")); // MQTT-3.1.2-11/13
        }
        None
    };
    // MQTT-3.1.2-17/19; a password without a user name is allowed at 5.0
    let username = if flags & 0b1000_0000 != 0 {
        Some(string(b)?)
    } else {
        None
    };
    let password = if flags & 0b100_0000 != 0 {
        Some(binary(b)?)
    } else {
        None
    };
    Ok(Connect {
        protocol: Protocol::V5,
        bridge: false,
        clean_start: flags & 0b10 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use crate::broker::packet::fixtures::{cat, frame, props, s, sp, user};
    use crate::broker::packet::v5::{Packet, read, read_first};
    use crate::broker::packet::{DecodeError, Protocol, reason};

    fn one(first: u8, body: &[u8]) -> Result<Option<Packet>, DecodeError> {
        read(&mut frame(first, body), 1 << 20, Protocol::V5)
    }

    /// A level-5 CONNECT body: flags, keep-alive 60, properties, id, the rest.
    fn connect5(flags: u8, p: &[u8], id: &[u8], rest: &[u8]) -> Vec<u8> {
        cat(&[
            b"\x00\x04MQTT\x05",
            &[flags, 0, 60],
            &props(p),
            &s(id),
            rest,
        ])
    }

    fn first(body: &[u8]) -> Result<Option<Packet>, DecodeError> {
        read_first(&mut frame(0x10, body), 1 << 20)
    }

    #[test]
    fn connect_level_5_decodes_properties_will_and_login() {
        let cp = cat(&[
            &[0x11, 0, 0, 0x0E, 0x10],
            &[0x21, 0, 10],
            &user(b"site", b"a"),
        ]);
        let wp = cat(&[
            &[0x18, 0, 0, 0, 5],
            &[0x01, 1],
            &[0x02, 0, 0, 0, 60],
            &sp(0x03, b"text/plain"),
            &sp(0x08, b"r/t"),
            &sp(0x09, b"cd"),
        ]);
        let rest = cat(&[&props(&wp), &s(b"w/t"), &s(b"bye"), &s(b"u"), &s(b"p")]);
        // user, password, will retain, will QoS 1, will, clean start
        let body = connect5(0b1110_1110, &cp, b"c5", &rest);
        let Ok(Some(Packet::Connect(c))) = first(&body) else {
            panic!("{:?}", first(&body));
        };
        assert_eq!(c.protocol, Protocol::V5);
        assert!(c.clean_start);
        assert_eq!((c.keep_alive, c.client_id.as_str()), (60, "c5"));
        assert_eq!(c.properties.session_expiry_interval, Some(3600));
        assert_eq!(c.properties.receive_maximum, Some(10));
        assert_eq!(
            c.properties.user_properties,
            vec![("site".into(), "a".into())]
        );
        let w = c.will.expect("will");
        assert_eq!(
            (w.topic.as_str(), &w.payload[..], w.qos, w.retain),
            ("w/t", &b"bye"[..], 1, true)
        );
        assert_eq!(w.properties.will_delay_interval, Some(5));
        assert_eq!(w.properties.payload_format_indicator, Some(1));
        assert_eq!(w.properties.message_expiry_interval, Some(60));
        assert_eq!(w.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(w.properties.response_topic.as_deref(), Some("r/t"));
        assert_eq!(w.properties.correlation_data.as_deref(), Some(&b"cd"[..]));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some(&b"p"[..]))
        );
    }

    #[test]
    fn connect_level_5_with_an_authentication_method_is_decoded_for_connack_0x8c() {
        let body = connect5(0x02, &sp(0x15, b"SCRAM-SHA-256"), b"c", b"");
        match first(&body) {
            Ok(Some(Packet::Connect(c))) => {
                assert_eq!(
                    c.properties.authentication_method.as_deref(),
                    Some("SCRAM-SHA-256")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_level_5_allows_an_empty_id_without_clean_start_and_a_password_alone() {
        // §3.1.3.1 leaves an empty id to the server; §3.1.2.9 allows a
        // password without a user name at 5.0
        let body = connect5(0b0100_0000, &[], b"", &s(b"pw"));
        match first(&body) {
            Ok(Some(Packet::Connect(c))) => {
                assert_eq!((c.client_id.as_str(), c.clean_start), ("", false));
                assert_eq!(
                    (c.username, c.password.as_deref()),
                    (None, Some(&b"pw"[..]))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_first_decodes_3_1_1_and_3_1_exactly_as_the_3_1_1_decoder_mqtt_3_1_2_2() {
        for body in [
            cat(&[&s(b"MQTT"), &[4, 0x02, 0, 0], &s(b"c1")]),
            cat(&[&s(b"MQIsdp"), &[3, 0x02, 0, 0], &s(b"c1")]),
            cat(&[&s(b"MQTT"), &[0x84, 0x02, 0, 0], &s(b"bridge")]),
        ] {
            let old = crate::broker::packet::read(&mut frame(0x10, &body), 1 << 20);
            assert_eq!(first(&body), old.map(|p| p.map(Packet::from)));
        }
        // MQTT-3.1.2-2: another level is refused (CONNACK 1, or 0x84 at 5.0)
        let level6 = cat(&[&s(b"MQTT"), &[6, 0x02, 0, 0], &s(b"c")]);
        assert_eq!(first(&level6), Err(DecodeError::Refuse(1)));
        assert_eq!(
            DecodeError::Refuse(1).reason_code(),
            reason::UNSUPPORTED_PROTOCOL_VERSION
        );
    }

    #[test]
    fn connect_level_5_checks_mqtt_3_1_2_3_mqtt_3_1_2_11_mqtt_3_1_2_12_mqtt_3_1_2_13_mqtt_1_5_4_2()
    {
        assert!(
            matches!(
                first(&connect5(0x03, &[], b"c", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "reserved flag (MQTT-3.1.2-3)"
        );
        assert!(
            matches!(
                first(&connect5(0x1E, &[], b"c", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "will QoS 3 (MQTT-3.1.2-12)"
        );
        assert!(
            matches!(
                first(&connect5(0x0A, &[], b"c", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "will QoS without a will (MQTT-3.1.2-11)"
        );
        assert!(
            matches!(
                first(&connect5(0x22, &[], b"c", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "will retain without a will (MQTT-3.1.2-13)"
        );
        assert!(
            matches!(
                first(&connect5(0x02, &[0x18, 0, 0, 0, 1], b"c", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "will delay among CONNECT properties"
        );
        assert!(
            matches!(
                first(&connect5(0x02, &[0x21, 0, 0], b"c", b"")),
                Err(DecodeError::Protocol(_))
            ),
            "receive maximum 0"
        );
        let wild_will = cat(&[&props(&[]), &s(b"w/+"), &s(b"x")]);
        assert!(
            matches!(
                first(&connect5(0x06, &[], b"c", &wild_will)),
                Err(DecodeError::Invalid(_))
            ),
            "will topic with a wildcard"
        );
        assert!(
            matches!(
                first(&connect5(0x02, &[], b"c\0", b"")),
                Err(DecodeError::Invalid(_))
            ),
            "U+0000 in the client id (MQTT-1.5.4-2)"
        );
        let wrong_level = cat(&[b"\x00\x04MQTT\x04", &[0x02, 0, 60], &props(&[]), &s(b"c")]);
        assert!(
            matches!(one(0x10, &wrong_level), Err(DecodeError::Invalid(_))),
            "a second CONNECT at another level (MQTT-3.1.2-2)"
        );
        let second = connect5(0x02, &[], b"c", b"");
        assert!(
            matches!(one(0x10, &second), Ok(Some(Packet::Connect(_)))),
            "the caller refuses a second CONNECT"
        );
    }
}
