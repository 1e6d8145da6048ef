//! MQTT 5.0 properties (section 2.2.2): the value types, the decoder with
//! every check a server owns on what a client sends (identifier known and
//! allowed in that packet, no duplicates, values in range, strings and
//! string pairs well-formed UTF-8 without U+0000), the variable byte
//! integer, and the encoder the broker's packets use. Each violation is a
//! [`DecodeError`]: `Invalid` (malformed, 0x81) or `Protocol` (0x82), as
//! the standard classifies it. Owns no state; must not know about
//! sessions or connections.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, binary, need, string, u8, u16};
use crate::broker::topics::valid_topic;

/// Property identifiers (section 2.2.2.2, table 2-4).
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The largest variable byte integer (four bytes, section 1.5.5).
#[cfg(test)]
pub const VARINT_MAX: u32 = 268_435_455;

/// The properties of one packet (or of a will), each field one property.
/// The decoder fills only those allowed in the packet it read; the
/// encoder writes every field that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Several in a PUBLISH the broker sends (MQTT-3.3.4-4); at most one
    /// in a SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// In the order they came (MQTT-3.3.2-17/18: forwarded unchanged).
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Which packet a client sent the properties in: what is allowed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// Whether property `id` may appear in `ctx` (section 2.2.2.2, table 2-4).
fn allowed(ctx: In, id: u8) -> bool {
    use In::*;
    use id::*;
    match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => matches!(ctx, Publish | Will),
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | Disconnect),
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, Connect | Auth),
        REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | RECEIVE_MAXIMUM
        | TOPIC_ALIAS_MAXIMUM
        | MAXIMUM_PACKET_SIZE => ctx == Connect,
        WILL_DELAY_INTERVAL => ctx == Will,
        SERVER_REFERENCE => ctx == Disconnect,
        REASON_STRING => matches!(ctx, Ack | Disconnect | Auth),
        TOPIC_ALIAS => ctx == Publish,
        USER_PROPERTY => true,
        // CONNACK only, or not a property at all
        _ => false,
    }
}

/// Reads a variable byte integer: at most four bytes (section 1.5.5), in
/// the fewest bytes that hold the value (MQTT-1.5.5-1); else malformed.
pub fn varint(b: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let byte = u8(b)?;
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Invalid("variable byte integer not minimal")); // MQTT-1.5.5-1
            }
            return Ok(value);
        }
    }
    Err(DecodeError::Invalid("variable byte integer over 4 bytes"))
}

/// Reads a property length and the properties after it, checked for `ctx`.
pub fn read(b: &mut Bytes, ctx: In) -> Result<Properties, DecodeError> {
    let len = varint(b)? as usize;
    need(b, len)?;
    let mut body = b.split_to(len);
    let mut p = Properties::default();
    let mut seen = 0u64;
    while body.has_remaining() {
        let id = varint(&mut body)?;
        let id = u8::try_from(id).map_err(|_| DecodeError::Invalid("unknown property"))?;
        // §2.2.2.2: an identifier not valid for the packet is malformed
        if !allowed(ctx, id) {
            return Err(DecodeError::Invalid("property not allowed in this packet"));
        }
        // each property's rule "It is a Protocol Error to include X more
        // than once" (MQTT-2.2.2-2); User Property may repeat
        let bit = 1u64 << id;
        if id != id::USER_PROPERTY && seen & bit != 0 {
            return Err(DecodeError::Protocol("duplicate property"));
        }
        seen |= bit;
        value(&mut body, id, &mut p)?;
    }
    // §3.1.2.11.10 / §3.15.2.2.3: Authentication Data needs a method
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::Protocol(
            "authentication data without a method",
        ));
    }
    Ok(p)
}

/// A 0 or 1 byte: Payload Format Indicator (§3.3.2.3.2), Request Problem
/// Information (§3.1.2.11.7), Request Response Information (§3.1.2.11.6).
fn flag(b: &mut Bytes) -> Result<u8, DecodeError> {
    match u8(b)? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value other than 0 or 1")),
    }
}

/// A two byte integer that must not be 0: Receive Maximum (§3.1.2.11.3),
/// Topic Alias (MQTT-3.3.2-8).
fn nonzero16(b: &mut Bytes, what: &'static str) -> Result<u16, DecodeError> {
    match u16(b)? {
        0 => Err(DecodeError::Protocol(what)),
        v => Ok(v),
    }
}

fn u32(b: &mut Bytes) -> Result<u32, DecodeError> {
    need(b, 4)?;
    Ok(b.get_u32())
}

/// Reads the value of property `id` into `p`.
fn value(b: &mut Bytes, id: u8, p: &mut Properties) -> Result<(), DecodeError> {
    match id {
        id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(flag(b)?),
        id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(u32(b)?),
        id::CONTENT_TYPE => p.content_type = Some(string(b)?),
        id::RESPONSE_TOPIC => {
            let t = string(b)?;
            if !valid_topic(&t) {
                // MQTT-3.3.2-14: a topic name, no wildcards
                return Err(DecodeError::Invalid("response topic"));
            }
            p.response_topic = Some(t);
        }
        id::CORRELATION_DATA => p.correlation_data = Some(binary(b)?),
        id::SUBSCRIPTION_IDENTIFIER => match varint(b)? {
            // §3.8.2.1.2: "It is a Protocol Error if the Subscription
            // Identifier has a value of 0"
            0 => return Err(DecodeError::Protocol("subscription identifier 0")),
            v => p.subscription_identifiers.push(v),
        },
        id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(u32(b)?),
        id::AUTHENTICATION_METHOD => p.authentication_method = Some(string(b)?),
        id::AUTHENTICATION_DATA => p.authentication_data = Some(binary(b)?),
        id::REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(flag(b)?),
        id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(u32(b)?),
        id::REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(flag(b)?),
        id::SERVER_REFERENCE => p.server_reference = Some(string(b)?),
        id::REASON_STRING => p.reason_string = Some(string(b)?),
        id::RECEIVE_MAXIMUM => p.receive_maximum = Some(nonzero16(b, "receive maximum 0")?),
        id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(u16(b)?),
        id::TOPIC_ALIAS => p.topic_alias = Some(nonzero16(b, "topic alias 0")?),
        // MQTT-1.5.7-1: both strings of the pair are UTF-8 strings
        id::USER_PROPERTY => p.user_properties.push((string(b)?, string(b)?)),
        id::MAXIMUM_PACKET_SIZE => match u32(b)? {
            // §3.1.2.11.4: "It is a Protocol Error ... for the value to be
            // set to zero"
            0 => return Err(DecodeError::Protocol("maximum packet size 0")),
            v => p.maximum_packet_size = Some(v),
        },
        // `allowed` lets no other identifier through
        _ => return Err(DecodeError::Invalid("unknown property")),
    }
    Ok(())
}

/// Where encoded bytes go: a buffer, or a counter for the length.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

impl Sink for usize {
    fn put(&mut self, bytes: &[u8]) {
        *self += bytes.len();
    }
}

/// A string property's bytes.
fn text(v: &Option<String>) -> Option<&[u8]> {
    v.as_deref().map(str::as_bytes)
}

fn put_varint(s: &mut impl Sink, mut n: u32) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        s.put(&[byte]);
        if n == 0 {
            break;
        }
    }
}

/// Length-prefixed bytes; callers keep them under 65,536 bytes.
fn put_binary(s: &mut impl Sink, v: &[u8]) {
    s.put(&(v.len() as u16).to_be_bytes());
    s.put(v);
}

/// Writes every property set in `p`.
fn emit(s: &mut impl Sink, p: &Properties) {
    let bytes = [
        (id::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator),
        (
            id::REQUEST_PROBLEM_INFORMATION,
            p.request_problem_information,
        ),
        (
            id::REQUEST_RESPONSE_INFORMATION,
            p.request_response_information,
        ),
        (id::MAXIMUM_QOS, p.maximum_qos),
        (id::RETAIN_AVAILABLE, p.retain_available),
        (
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            p.wildcard_subscription_available,
        ),
        (
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            p.subscription_identifier_available,
        ),
        (
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            p.shared_subscription_available,
        ),
    ];
    for (pid, v) in bytes {
        if let Some(v) = v {
            s.put(&[pid, v]);
        }
    }
    let u16s = [
        (id::SERVER_KEEP_ALIVE, p.server_keep_alive),
        (id::RECEIVE_MAXIMUM, p.receive_maximum),
        (id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum),
        (id::TOPIC_ALIAS, p.topic_alias),
    ];
    for (pid, v) in u16s {
        if let Some(v) = v {
            s.put(&[pid]);
            s.put(&v.to_be_bytes());
        }
    }
    let u32s = [
        (id::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval),
        (id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval),
        (id::WILL_DELAY_INTERVAL, p.will_delay_interval),
        (id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size),
    ];
    for (pid, v) in u32s {
        if let Some(v) = v {
            s.put(&[pid]);
            s.put(&v.to_be_bytes());
        }
    }
    let binaries = [
        (id::CONTENT_TYPE, text(&p.content_type)),
        (id::RESPONSE_TOPIC, text(&p.response_topic)),
        (id::CORRELATION_DATA, p.correlation_data.as_deref()),
        (
            id::ASSIGNED_CLIENT_IDENTIFIER,
            text(&p.assigned_client_identifier),
        ),
        (id::AUTHENTICATION_METHOD, text(&p.authentication_method)),
        (id::AUTHENTICATION_DATA, p.authentication_data.as_deref()),
        (id::RESPONSE_INFORMATION, text(&p.response_information)),
        (id::SERVER_REFERENCE, text(&p.server_reference)),
        (id::REASON_STRING, text(&p.reason_string)),
    ];
    for (pid, v) in binaries {
        if let Some(v) = v {
            s.put(&[pid]);
            put_binary(s, v);
        }
    }
    for v in &p.subscription_identifiers {
        s.put(&[id::SUBSCRIPTION_IDENTIFIER]);
        put_varint(s, *v);
    }
    for (k, v) in &p.user_properties {
        s.put(&[id::USER_PROPERTY]);
        put_binary(s, k.as_bytes());
        put_binary(s, v.as_bytes());
    }
}

/// Bytes a variable byte integer of `n` takes.
pub fn varint_len(n: usize) -> usize {
    match n {
        0..128 => 1,
        128..16_384 => 2,
        16_384..2_097_152 => 3,
        _ => 4,
    }
}

/// Bytes `p` takes on the wire, its property length included.
pub fn wire_len(p: &Properties) -> usize {
    let mut n = 0usize;
    emit(&mut n, p);
    varint_len(n) + n
}

/// Writes the property length and the properties of `p`.
pub fn write(buf: &mut BytesMut, p: &Properties) {
    let mut n = 0usize;
    emit(&mut n, p);
    put_varint(buf, n as u32);
    emit(buf, p);
}

#[cfg(test)]
mod tests {
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
}
