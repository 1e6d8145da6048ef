//! Poison messages: the size check that keeps a message the uplink can
//! never carry away from the upstream link (an oversize publish would be
//! refused on every try, and replayed first on every reconnect, so nothing
//! behind it would get out). What the forwarder does with failed tries is in the `forward` module
//! (`blame`); the dead-letter table is `outbox/dead.rs`.
//!
//! Owns the MQTT size arithmetic. Must not touch the outbox or the network.

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
    let size = packet_size(topic, payload);
    (size > max).then(|| {
        format!(
            "its MQTT packet of {size} bytes is larger than uplink.max_packet_size ({max} bytes)"
        )
    })
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
