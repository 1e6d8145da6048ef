//! Poison messages: the size check that keeps a message the uplink can
//! never carry away from the upstream link (an oversize publish would be
//! refused on every try, and replayed first on every reconnect, so nothing
//! behind it would get out). What the forwarder does with failed tries is in the `forward` module
//! (`blame`); the dead-letter table is `outbox/dead.rs`.
//!
//! Owns the MQTT size arithmetic. Must not touch the outbox or the network.

use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::bridge::config::Protocol;

/// Bytes of the MQTT 3.1.1 PUBLISH packet that carries `topic` and a
/// payload of `payload` bytes at QoS 1/2: fixed header, remaining length,
/// topic length and packet id included (as the codec counts it).
pub fn packet_size(topic: &str, payload: usize) -> u64 {
    let remaining = 2 + topic.len() as u64 + 2 + payload as u64;
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// Why a message does not fit in `max` bytes, if it does not.
pub fn too_large(topic: &str, payload: usize, max: u64) -> Option<String> {
    too_large_for(packet_size(topic, payload), max, None)
}

/// Why a packet of `size` bytes does not fit in `ours` bytes
/// (`uplink.max_packet_size`) or in the upstream broker's Maximum Packet
/// Size (`server`, from its CONNACK), if it does not.
pub fn too_large_for(size: u64, ours: u64, server: Option<u64>) -> Option<String> {
    if size > ours {
        return Some(format!(
            "its MQTT packet of {size} bytes is larger than uplink.max_packet_size ({ours} bytes)"
        ));
    }
    let server = server.filter(|&m| size > m)?;
    Some(format!(
        "its MQTT packet of {size} bytes is larger than the upstream broker's \
         Maximum Packet Size ({server} bytes, from its CONNACK)"
    ))
}

/// Bytes an MQTT 5 PUBLISH carries beyond [`packet_size`]: the property
/// length, the properties, and room for a topic alias (3 bytes) the
/// connection may add; 0 at 3.1.1. The remaining length may take one
/// byte more: counted too.
pub fn properties_size(proto: Protocol, p: Option<&PublishProperties>) -> u64 {
    if proto == Protocol::V311 {
        return 0;
    }
    let mut len = 3u64; // topic alias
    if let Some(p) = p {
        if p.message_expiry_interval.is_some() {
            len += 5;
        }
        for (k, v) in &p.user_properties {
            len += 1 + 2 + k.len() as u64 + 2 + v.len() as u64;
        }
        if let Some(t) = &p.response_topic {
            len += 1 + 2 + t.len() as u64;
        }
        if let Some(c) = &p.correlation_data {
            len += 1 + 2 + c.len() as u64;
        }
    }
    let len_len = if len < 128 { 1 } else { 2 };
    len + len_len + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_mqtt_encoding() {
        // 0x32, remaining length 1 byte, 2 + "a/b", 2 (pkid), 10 payload
        assert_eq!(packet_size("a/b", 10), 1 + 1 + 2 + 3 + 2 + 10);
        assert_eq!(packet_size("t", 200), 1 + 2 + 2 + 1 + 2 + 200);
        assert!(too_large("t", 2000, 1024).is_some());
        assert!(too_large("t", 100, 1024).is_none());
    }
}
