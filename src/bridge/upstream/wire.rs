//! The protocol seam of the upstream client: the link speaks MQTT 5
//! packets (rumqttc's `mqttbytes::v5` types, a superset of 3.1.1), and
//! this file writes and reads them on the wire in the version of
//! `uplink.protocol`. At 3.1.1 a packet is lowered to its 3.1.1 form on
//! the way out (properties and reason codes dropped) and a 3.1.1 packet
//! is lifted into the 5.0 types on the way in (no properties, reason
//! 0x00), as the embedded broker does (docs/design.md, "MQTT 5.0").
//!
//! Owns the byte encoding of each version. Must not keep state: topic
//! aliases belong to one connection (`conn.rs`), the session to the link.

use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::Error as V4Error;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::Error as V5Error;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, PubRel, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};

pub use crate::bridge::config::Protocol;

/// Why a packet could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not a whole packet yet.
    #[error("incomplete packet")]
    Incomplete,
    #[error("a packet of {0} bytes exceeds uplink.max_packet_size")]
    TooLarge(usize),
    #[error("{0}")]
    Bad(String),
}

impl From<V4Error> for WireError {
    fn from(e: V4Error) -> WireError {
        match e {
            V4Error::InsufficientBytes(_) => WireError::Incomplete,
            V4Error::PayloadSizeLimitExceeded(n) => WireError::TooLarge(n),
            V4Error::OutgoingPacketTooLarge { pkt_size, .. } => WireError::TooLarge(pkt_size),
            e => WireError::Bad(format!("{e:?}")),
        }
    }
}

impl From<V5Error> for WireError {
    fn from(e: V5Error) -> WireError {
        match e {
            V5Error::InsufficientBytes(_) => WireError::Incomplete,
            V5Error::PayloadSizeLimitExceeded { pkt_size, .. } => WireError::TooLarge(pkt_size),
            V5Error::OutgoingPacketTooLarge { pkt_size, .. } => {
                WireError::TooLarge(pkt_size as usize)
            }
            e => WireError::Bad(format!("{e:?}")),
        }
    }
}

/// Writes `p` in `proto` behind what `buf` holds; fails when it is
/// larger than `max` bytes (nothing written then).
pub fn write(proto: Protocol, p: &Packet, buf: &mut BytesMut, max: usize) -> Result<(), WireError> {
    match (proto, p) {
        (_, Packet::Publish(p)) => write_publish(proto, p, buf, max)?,
        (Protocol::V5, p) => {
            p.write(buf, Some(max.min(u32::MAX as usize) as u32))?;
        }
        (Protocol::V311, p) => {
            lower(p)?.write(buf, max)?;
        }
    }
    Ok(())
}

/// Writes a PUBLISH in `proto` (without moving it into a `Packet`: the
/// session keeps it for resending), as [`write`].
pub fn write_publish(
    proto: Protocol,
    p: &Publish,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(), WireError> {
    match proto {
        Protocol::V311 => write_v4_publish(p, buf, max),
        Protocol::V5 => {
            if p.size() > max {
                return Err(WireError::TooLarge(p.size()));
            }
            p.write(buf)?;
            Ok(())
        }
    }
}

/// The size on the wire of `p` written in `proto`.
pub fn publish_size(proto: Protocol, p: &Publish) -> usize {
    match proto {
        Protocol::V5 => p.size(),
        Protocol::V311 => {
            let remaining = v4_publish_len(p);
            1 + len_len(remaining) + remaining
        }
    }
}

/// Reads the next whole packet of `buf` in `proto`.
pub fn read(proto: Protocol, buf: &mut BytesMut, max: usize) -> Result<Packet, WireError> {
    match proto {
        Protocol::V5 => Ok(Packet::read(buf, Some(max.min(u32::MAX as usize) as u32))?),
        Protocol::V311 => lift(v4::Packet::read(buf, max)?),
    }
}

fn v4_publish_len(p: &Publish) -> usize {
    let pkid = if p.qos == V5QoS::AtMostOnce { 0 } else { 2 };
    2 + p.topic.len() + pkid + p.payload.len()
}

fn len_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A 3.1.1 PUBLISH from the 5.0 one, its properties left out (written
/// here: the topic stays the bytes it is, no copy into a `String`).
fn write_v4_publish(p: &Publish, buf: &mut BytesMut, max: usize) -> Result<(), WireError> {
    let remaining = v4_publish_len(p);
    let size = 1 + len_len(remaining) + remaining;
    if size > max {
        return Err(WireError::TooLarge(size));
    }
    buf.reserve(size);
    let flags = u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
    buf.put_u8(0x30 | flags);
    let mut n = remaining;
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
    buf.put_u16(p.topic.len() as u16);
    buf.extend_from_slice(&p.topic);
    if p.qos != V5QoS::AtMostOnce {
        buf.put_u16(p.pkid);
    }
    buf.extend_from_slice(&p.payload);
    Ok(())
}

fn v4_qos(q: V5QoS) -> rumqttc::QoS {
    match q {
        V5QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        V5QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        V5QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// The 5.0 QoS of a 3.1.1 one.
pub fn v5_qos(q: rumqttc::QoS) -> V5QoS {
    match q {
        rumqttc::QoS::AtMostOnce => V5QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => V5QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => V5QoS::ExactlyOnce,
    }
}

/// The 3.1.1 form of a packet the client sends.
fn lower(p: &Packet) -> Result<v4::Packet, WireError> {
    Ok(match p {
        Packet::Connect(c, will, login) => v4::Packet::Connect(v4::Connect {
            protocol: rumqttc::mqttbytes::Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: will.as_ref().map(|w| v4::LastWill {
                topic: String::from_utf8_lossy(&w.topic).into_owned(),
                message: w.message.clone(),
                qos: v4_qos(w.qos),
                retain: w.retain,
            }),
            login: login
                .as_ref()
                .map(|l| v4::Login::new(l.username.as_str(), l.password.as_str())),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck::new(a.pkid)),
        Packet::PubRec(r) => v4::Packet::PubRec(v4::PubRec::new(r.pkid)),
        Packet::PubRel(r) => v4::Packet::PubRel(v4::PubRel::new(r.pkid)),
        Packet::PubComp(c) => v4::Packet::PubComp(v4::PubComp::new(c.pkid)),
        Packet::Subscribe(s) => v4::Packet::Subscribe(v4::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.path.clone(), v4_qos(f.qos)))
                .collect(),
        }),
        Packet::PingReq(_) => v4::Packet::PingReq,
        Packet::Disconnect(_) => v4::Packet::Disconnect,
        other => {
            return Err(WireError::Bad(format!(
                "not a packet this client sends: {other:?}"
            )));
        }
    })
}

/// The 5.0 form of a packet a 3.1.1 broker sent.
fn lift(p: v4::Packet) -> Result<Packet, WireError> {
    Ok(match p {
        v4::Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            code: match a.code {
                v4::ConnectReturnCode::Success => ConnectReturnCode::Success,
                v4::ConnectReturnCode::RefusedProtocolVersion => {
                    ConnectReturnCode::UnsupportedProtocolVersion
                }
                v4::ConnectReturnCode::BadClientId => ConnectReturnCode::ClientIdentifierNotValid,
                v4::ConnectReturnCode::ServiceUnavailable => ConnectReturnCode::ServerUnavailable,
                v4::ConnectReturnCode::BadUserNamePassword => {
                    ConnectReturnCode::BadUserNamePassword
                }
                v4::ConnectReturnCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
            },
            properties: None,
        }),
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: v5_qos(p.qos),
            retain: p.retain,
            topic: bytes::Bytes::from(p.topic.into_bytes()),
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid, None)),
        v4::Packet::PubRec(r) => Packet::PubRec(PubRec::new(r.pkid, None)),
        v4::Packet::PubRel(r) => Packet::PubRel(PubRel::new(r.pkid, None)),
        v4::Packet::PubComp(c) => Packet::PubComp(PubComp::new(c.pkid, None)),
        v4::Packet::SubAck(s) => Packet::SubAck(SubAck {
            pkid: s.pkid,
            return_codes: s
                .return_codes
                .into_iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => SubscribeReasonCode::Success(v5_qos(q)),
                    v4::SubscribeReasonCode::Failure => SubscribeReasonCode::Failure,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons: Vec::new(),
            properties: None,
        }),
        v4::Packet::PingResp => Packet::PingResp(rumqttc::v5::mqttbytes::v5::PingResp),
        other => {
            return Err(WireError::Bad(format!(
                "a packet a broker must not send: {other:?}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_lowered_to_3_1_1_is_what_the_3_1_1_codec_writes() {
        let mut p = Publish::new("a/b", V5QoS::AtLeastOnce, vec![1, 2, 3], None);
        p.pkid = 7;
        p.retain = true;
        let mut ours = BytesMut::new();
        write(Protocol::V311, &Packet::Publish(p.clone()), &mut ours, 1024).expect("write");
        let mut theirs = BytesMut::new();
        let mut q = v4::Publish::new("a/b", rumqttc::QoS::AtLeastOnce, vec![1, 2, 3]);
        q.pkid = 7;
        q.retain = true;
        q.write(&mut theirs).expect("write");
        assert_eq!(ours, theirs);
        assert_eq!(publish_size(Protocol::V311, &p), theirs.len());
        let big = Publish::new("t", V5QoS::AtLeastOnce, vec![0; 300], None);
        assert!(matches!(
            write(Protocol::V311, &Packet::Publish(big), &mut ours, 100),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn a_3_1_1_puback_reads_as_a_5_0_success() {
        let mut buf = BytesMut::new();
        v4::Packet::PubAck(v4::PubAck::new(9))
            .write(&mut buf, 100)
            .expect("write");
        match read(Protocol::V311, &mut buf, 100).expect("read") {
            Packet::PubAck(a) => {
                assert_eq!(a.pkid, 9);
                assert_eq!(a.reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
            }
            other => panic!("{other:?}"),
        }
    }
}
