//! MQTT packets as the broker reads and writes them: framing of the fixed
//! header (rumqttc's `mqttbytes::check`), then a strict decoder for what a
//! client may send, with every check a server owns, and the encoders for
//! what the broker sends. This file holds the MQTT 3.1 / 3.1.1 decoder
//! ([`read`]; its encoders, `write_*`, are in `encode`) and what the
//! levels share ([`Protocol`], [`DecodeError`]); MQTT 5.0 is in [`props`]
//! (properties), [`v5`] (the decoder, `connect5` its CONNECT, and
//! [`v5::read_first`] / [`v5::read`] that pick the decoder by protocol
//! level; `lift` turns 3.1.1 packets into its types), [`encode5`] (what
//! the broker sends at level 5) and [`reason`] (the reason codes).
//!
//! Why not decode with `mqttbytes` entirely: it is lenient (no MQTT 3.1
//! `MQIsdp`, reserved bits and subscription option bits masked away,
//! U+0000 and topic rules unchecked), and the checks need the raw bytes.
//! Each violation is a [`DecodeError`] that closes the connection; the
//! two CONNECT problems the standard answers with a CONNACK first are
//! [`DecodeError::Refuse`]. Owns no state; must not know about sessions.

use bytes::{Buf, Bytes, BytesMut};
// the 3.1.1 tests build frames with it
#[cfg(test)]
use bytes::BufMut;

use super::topics::{valid_filter, valid_topic};

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1: name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: name `MQTT`, level 5 (decoded by [`v5`] only).
    V5,
}

mod connect5;
mod encode;
pub mod encode5;
mod lift;
pub mod props;
pub mod reason;
pub mod v5;

use encode::remaining_length;
pub use encode::{write_ack, write_connack, write_pingresp, write_publish, write_suback};

#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub protocol: Protocol,
    /// Protocol level with the bridge bit (0x83 / 0x84: mosquitto's
    /// `try_private`): a broker bridging in, which must not get its own
    /// messages back.
    pub bridge: bool,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pkid: u16,
    pub payload: Bytes,
}

/// What a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
}

/// CONNACK return codes (MQTT 3.1.1 table 3.1).
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const BAD_PROTOCOL: u8 = 1;
    pub const ID_REJECTED: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;
    pub const BAD_CREDENTIALS: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Invalid(&'static str),
    /// CONNECT refused with this CONNACK code, then the connection closes.
    #[error("CONNECT refused with CONNACK code {0}")]
    Refuse(u8),
    /// MQTT 5: a well-formed packet that breaks a rule of the standard
    /// ("It is a Protocol Error ..."): DISCONNECT 0x82.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code to send before closing: in a DISCONNECT, or
    /// in the CONNACK when the CONNECT itself was bad (section 4.13).
    /// [`DecodeError::Refuse`] carries a 3.1.1 CONNACK code: its 5.0
    /// equivalent is returned.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::Invalid(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::Refuse(code) => match *code {
                connack::BAD_PROTOCOL => reason::UNSUPPORTED_PROTOCOL_VERSION,
                connack::ID_REJECTED => reason::CLIENT_IDENTIFIER_NOT_VALID,
                connack::UNAVAILABLE => reason::SERVER_UNAVAILABLE,
                connack::BAD_CREDENTIALS => reason::BAD_USER_NAME_OR_PASSWORD,
                connack::NOT_AUTHORIZED => reason::NOT_AUTHORIZED,
                _ => reason::UNSPECIFIED_ERROR,
            },
        }
    }
}

/// Takes one whole packet off the front of `buf`: `Ok(None)` when more
/// bytes are needed. `max` bounds the remaining length, checked from the
/// fixed header alone, before the body is read.
pub fn read(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, DecodeError> {
    match frame(buf, max)? {
        Some((byte1, body)) => decode(byte1, body).map(Some),
        None => Ok(None),
    }
}

/// Takes one whole packet off the front of `buf`: its first byte and its
/// body (what follows the remaining length); `Ok(None)` when more bytes
/// are needed.
fn frame(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, Bytes)>, DecodeError> {
    let header = match rumqttc::mqttbytes::check(buf.iter(), max) {
        Ok(h) => h,
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
            return Err(DecodeError::TooLarge { size, max });
        }
        Err(_) => return Err(DecodeError::Invalid("remaining length")),
    };
    // the fixed header: byte 1 and 1..4 bytes of remaining length
    let header_len = 1
        + buf[1..]
            .iter()
            .take(4)
            .take_while(|b| *b & 0x80 != 0)
            .count()
        + 1;
    let mut frame = buf.split_to(header.frame_length()).freeze();
    let byte1 = frame[0];
    frame.advance(header_len);
    Ok(Some((byte1, frame)))
}

/// The fixed header's flags must be `want` (MQTT-2.2.2-1/2, MQTT-2.1.3-1:
/// reserved flags as listed, else malformed).
pub(super) fn flags_are(flags: u8, want: u8) -> Result<(), DecodeError> {
    match flags == want {
        true => Ok(()),
        false => Err(DecodeError::Invalid("reserved flags in the fixed header")),
    }
}

fn decode(byte1: u8, mut b: Bytes) -> Result<Packet, DecodeError> {
    let flags = byte1 & 0x0F;
    let want_flags = |f: u8| flags_are(flags, f);
    let packet = match byte1 >> 4 {
        1 => {
            want_flags(0)?;
            Packet::Connect(Box::new(connect(&mut b)?))
        }
        3 => Packet::Publish(publish(flags, &mut b)?),
        4 => {
            want_flags(0)?;
            Packet::PubAck(pkid(&mut b)?)
        }
        5 => {
            want_flags(0)?;
            Packet::PubRec(pkid(&mut b)?)
        }
        6 => {
            want_flags(0b0010)?;
            Packet::PubRel(pkid(&mut b)?)
        }
        7 => {
            want_flags(0)?;
            Packet::PubComp(pkid(&mut b)?)
        }
        8 => {
            want_flags(0b0010)?;
            let pkid = pkid(&mut b)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                let f = string(&mut b)?;
                let opts = u8(&mut b)?;
                // MQTT-3.8.3-4: reserved bits; QoS 3 is malformed
                if opts > 2 {
                    return Err(DecodeError::Invalid("subscription options"));
                }
                if !valid_filter(&f) {
                    return Err(DecodeError::Invalid("topic filter"));
                }
                filters.push((f, opts));
            }
            if filters.is_empty() {
                return Err(DecodeError::Invalid("SUBSCRIBE without filters")); // MQTT-3.8.3-3
            }
            return Ok(Packet::Subscribe { pkid, filters });
        }
        10 => {
            want_flags(0b0010)?;
            let pkid = pkid(&mut b)?;
            let mut filters = Vec::new();
            while b.has_remaining() {
                let f = string(&mut b)?;
                if !valid_filter(&f) {
                    return Err(DecodeError::Invalid("topic filter"));
                }
                filters.push(f);
            }
            if filters.is_empty() {
                return Err(DecodeError::Invalid("UNSUBSCRIBE without filters")); // MQTT-3.10.3-2
            }
            return Ok(Packet::Unsubscribe { pkid, filters });
        }
        12 => {
            want_flags(0)?;
            Packet::PingReq
        }
        14 => {
            want_flags(0)?;
            Packet::Disconnect
        }
        _ => return Err(DecodeError::Invalid("packet type a client may not send")),
    };
    if b.has_remaining() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(packet)
}

fn need(b: &Bytes, n: usize) -> Result<(), DecodeError> {
    if b.remaining() < n {
        Err(DecodeError::Invalid("packet ends early"))
    } else {
        Ok(())
    }
}

fn u8(b: &mut Bytes) -> Result<u8, DecodeError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn u16(b: &mut Bytes) -> Result<u16, DecodeError> {
    need(b, 2)?;
    Ok(b.get_u16())
}

/// A packet identifier: never 0 (MQTT-2.3.1-1).
fn pkid(b: &mut Bytes) -> Result<u16, DecodeError> {
    match u16(b)? {
        0 => Err(DecodeError::Invalid("packet identifier 0")),
        id => Ok(id),
    }
}

fn binary(b: &mut Bytes) -> Result<Bytes, DecodeError> {
    let n = u16(b)? as usize;
    need(b, n)?;
    Ok(b.split_to(n))
}

/// A UTF-8 string: well-formed (no surrogates, MQTT-1.5.3-1) and without
/// U+0000 (MQTT-1.5.3-2).
fn string(b: &mut Bytes) -> Result<String, DecodeError> {
    utf8(binary(b)?)
}

fn utf8(raw: Bytes) -> Result<String, DecodeError> {
    let s = String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Invalid("invalid UTF-8"))?;
    if s.contains('\0') {
        return Err(DecodeError::Invalid("U+0000 in a string"));
    }
    Ok(s)
}

fn publish(flags: u8, b: &mut Bytes) -> Result<Publish, DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        return Err(DecodeError::Invalid("QoS 3")); // MQTT-3.3.1-4
    }
    let topic = string(b)?;
    if !valid_topic(&topic) {
        return Err(DecodeError::Invalid("topic name")); // MQTT-3.3.2-1/2
    }
    let pkid = if qos > 0 { pkid(b)? } else { 0 };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 1 != 0,
        topic,
        pkid,
        payload: b.split_to(b.remaining()),
    })
}

fn connect(b: &mut Bytes) -> Result<Connect, DecodeError> {
    let name = binary(b)?;
    let level = u8(b)?;
    let bridge = level & 0x80 != 0;
    let protocol = match (&name[..], level & 0x7f) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::Refuse(connack::BAD_PROTOCOL)),
        _ => return Err(DecodeError::Invalid("protocol name")), // MQTT-3.1.2-1
    };
    let flags = u8(b)?;
    if flags & 1 != 0 {
        return Err(DecodeError::Invalid("CONNECT reserved flag")); // MQTT-3.1.2-3
    }
    let keep_alive = u16(b)?;
    let client_id = string(b)?;
    let clean_session = flags & 0b10 != 0;
    let will_flag = flags & 0b100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    let will = if will_flag {
        if will_qos == 3 {
            return Err(DecodeError::Invalid("will QoS 3")); // MQTT-3.1.2-14
        }
        let topic = string(b)?;
        if !valid_topic(&topic) {
            return Err(DecodeError::Invalid("will topic"));
        }
        Some(Will {
            topic,
            payload: binary(b)?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        if will_qos != 0 || will_retain {
            return Err(DecodeError::Invalid("will QoS or retain without a will")); // MQTT-3.1.2-11/13/15
        }
        None
    };
    let has_user = flags & 0b1000_0000 != 0;
    let has_password = flags & 0b100_0000 != 0;
    if has_password && !has_user && protocol == Protocol::V311 {
        return Err(DecodeError::Invalid("password without user name")); // MQTT-3.1.2-22
    }
    let username = if has_user { Some(string(b)?) } else { None };
    let password = if has_password { Some(binary(b)?) } else { None };
    if client_id.is_empty() && !clean_session {
        return Err(DecodeError::Refuse(connack::ID_REJECTED)); // MQTT-3.1.3-8
    }
    if protocol == Protocol::V31 && (client_id.is_empty() || client_id.len() > 23) {
        return Err(DecodeError::Refuse(connack::ID_REJECTED));
    }
    Ok(Connect {
        protocol,
        bridge,
        clean_session,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
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
}
