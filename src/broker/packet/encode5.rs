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
#[path = "encode5_tests.rs"]
mod tests;
