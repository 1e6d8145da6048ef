//! A subscription's options: the QoS granted and what MQTT 5 adds (no
//! local, retain as published, the subscription identifier; retain
//! handling acts at SUBSCRIBE time only), and how they are stored in
//! `broker.db`'s one `qos` column (the options byte of MQTT 5's
//! SUBSCRIBE, figure 3-12: QoS in bits 0-1, no local bit 2, retain as
//! published bit 3; a 3.1.1 row is its QoS alone, read the same way).
//!
//! Owns the options value only. Must not know about sessions or packets.

/// One subscription's options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOpts {
    pub qos: u8,
    /// Messages the subscriber published itself are not sent back
    /// (MQTT-3.8.3-3).
    pub no_local: bool,
    /// Live copies keep the publisher's retain flag (MQTT-3.3.1-12/13).
    pub retain_as_published: bool,
    /// The Subscription Identifier, sent with every matching message
    /// (MQTT-3.3.4-3). Not stored: after a restart it is gone.
    pub id: Option<u32>,
}

impl SubOpts {
    /// A 3.1.1 subscription: its QoS alone.
    pub fn qos(qos: u8) -> SubOpts {
        SubOpts {
            qos,
            ..SubOpts::default()
        }
    }

    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        (self.qos & 3) | (u8::from(self.no_local) << 2) | (u8::from(self.retain_as_published) << 3)
    }

    /// From the stored byte.
    pub fn from_byte(b: u8) -> SubOpts {
        SubOpts {
            qos: b & 3,
            no_local: b & 4 != 0,
            retain_as_published: b & 8 != 0,
            id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_byte_keeps_qos_no_local_and_retain_as_published() {
        let o = SubOpts {
            qos: 2,
            no_local: true,
            retain_as_published: true,
            id: Some(7),
        };
        let back = SubOpts::from_byte(o.to_byte());
        assert_eq!((back.qos, back.no_local, back.retain_as_published), (2, true, true));
        assert_eq!(SubOpts::from_byte(1), SubOpts::qos(1), "a 3.1.1 row");
    }
}
