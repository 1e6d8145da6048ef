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
#[path = "props_tests.rs"]
mod tests;
