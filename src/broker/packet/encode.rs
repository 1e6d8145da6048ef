//! The packets the broker sends at MQTT 3.1 / 3.1.1: CONNACK, the
//! acknowledgements, SUBACK, PINGRESP, PUBLISH; and the remaining length
//! every level writes. Owns no state.

use bytes::{BufMut, BytesMut};

use super::props::{self, Properties};

pub(super) fn remaining_length(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

pub fn write_connack(buf: &mut BytesMut, session_present: bool, code: u8) {
    buf.put_slice(&[0x20, 2, session_present as u8, code]);
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70), UNSUBACK (0xB0).
pub fn write_ack(buf: &mut BytesMut, first: u8, pkid: u16) {
    buf.put_slice(&[first, 2]);
    buf.put_u16(pkid);
}

pub fn write_suback(buf: &mut BytesMut, pkid: u16, codes: &[u8]) {
    buf.put_u8(0x90);
    remaining_length(buf, 2 + codes.len());
    buf.put_u16(pkid);
    buf.put_slice(codes);
}

pub fn write_pingresp(buf: &mut BytesMut) {
    buf.put_slice(&[0xD0, 0]);
}

/// A PUBLISH to a client; `pkid` is ignored at QoS 0.
pub fn write_publish(
    buf: &mut BytesMut,
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) {
    publish(buf, topic, payload, qos, retain, dup, pkid, None);
}

/// A PUBLISH at any level: `props` (5.0 only) between the packet id and
/// the payload.
#[allow(clippy::too_many_arguments)]
pub(super) fn publish(
    buf: &mut BytesMut,
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
    props: Option<&Properties>,
) {
    let props_len = props.map_or(0, props::wire_len);
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + props_len + payload.len();
    buf.reserve(len + 5);
    buf.put_u8(0x30 | (dup as u8) << 3 | qos << 1 | retain as u8);
    remaining_length(buf, len);
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic);
    if qos > 0 {
        buf.put_u16(pkid);
    }
    if let Some(p) = props {
        props::write(buf, p);
    }
    buf.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
