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
#[path = "connect5_tests.rs"]
mod tests;
