//! What the upstream broker allows, from its CONNACK (MQTT 5 properties;
//! a 3.1.1 broker says nothing, so everything is allowed), and what a
//! PUBACK / PUBREC reason code means for a message.
//!
//! Owns that reading of the CONNACK and of reason codes. Must not do I/O
//! nor keep state across connections.

use rumqttc::v5::mqttbytes::v5::{ConnAckProperties, PubAckReason, PubRecReason};

/// The upstream broker's limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Receive Maximum: QoS 1/2 messages unacknowledged at once, at most.
    pub receive_max: u16,
    /// Maximum Packet Size the broker takes, if it said one.
    pub max_packet: Option<u32>,
    /// Maximum QoS (0, 1 or 2).
    pub max_qos: u8,
    /// Retain Available.
    pub retain: bool,
    /// Wildcard Subscription Available.
    pub wildcard: bool,
    /// Shared Subscription Available.
    pub shared: bool,
    /// Topic Alias Maximum: aliases the broker takes from us (0: none).
    pub topic_alias_max: u16,
    /// Session Expiry Interval the broker grants, when it says one (it may
    /// be less than `uplink.session_expiry`).
    pub session_expiry: Option<u32>,
}

impl Default for Limits {
    /// A broker that said nothing (3.1.1, or 5.0 without properties).
    fn default() -> Limits {
        Limits {
            receive_max: u16::MAX,
            max_packet: None,
            max_qos: 2,
            retain: true,
            wildcard: true,
            shared: true,
            topic_alias_max: 0,
            session_expiry: None,
        }
    }
}

impl Limits {
    /// The limits a CONNACK's properties say (absent: the defaults of
    /// MQTT-3.2.2.3).
    pub fn from_connack(p: Option<&ConnAckProperties>) -> Limits {
        let d = Limits::default();
        let Some(p) = p else { return d };
        Limits {
            receive_max: p.receive_max.filter(|&r| r > 0).unwrap_or(d.receive_max),
            max_packet: p.max_packet_size.filter(|&m| m > 0),
            max_qos: p.max_qos.map_or(d.max_qos, |q| q.min(2)),
            retain: p.retain_available != Some(0),
            wildcard: p.wildcard_subscription_available != Some(0),
            shared: p.shared_subscription_available != Some(0),
            topic_alias_max: p.topic_alias_max.unwrap_or(0),
            session_expiry: p.session_expiry_interval,
        }
    }
}

/// A PUBACK / PUBREC that refused its message (reason ≥ 0x80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    /// The reason code's name, and the broker's reason string if any.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the upstream broker refused it: reason code 0x{:02X} {}",
            self.code, self.reason
        )
    }
}

/// The refusal in a PUBACK reason, `None` for success (0x00, and 0x10 no
/// matching subscribers).
pub fn puback_refusal(r: PubAckReason, text: Option<&str>) -> Option<Refusal> {
    let (code, name) = match r {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::UnspecifiedError => (0x80, "unspecified error"),
        PubAckReason::ImplementationSpecificError => (0x83, "implementation specific error"),
        PubAckReason::NotAuthorized => (0x87, "not authorized"),
        PubAckReason::TopicNameInvalid => (0x90, "topic name invalid"),
        PubAckReason::PacketIdentifierInUse => (0x91, "packet identifier in use"),
        PubAckReason::QuotaExceeded => (0x97, "quota exceeded"),
        PubAckReason::PayloadFormatInvalid => (0x99, "payload format invalid"),
    };
    Some(refusal(code, name, text))
}

/// The refusal in a PUBREC reason, as [`puback_refusal`].
pub fn pubrec_refusal(r: PubRecReason, text: Option<&str>) -> Option<Refusal> {
    let same = match r {
        PubRecReason::Success => PubAckReason::Success,
        PubRecReason::NoMatchingSubscribers => PubAckReason::NoMatchingSubscribers,
        PubRecReason::UnspecifiedError => PubAckReason::UnspecifiedError,
        PubRecReason::ImplementationSpecificError => PubAckReason::ImplementationSpecificError,
        PubRecReason::NotAuthorized => PubAckReason::NotAuthorized,
        PubRecReason::TopicNameInvalid => PubAckReason::TopicNameInvalid,
        PubRecReason::PacketIdentifierInUse => PubAckReason::PacketIdentifierInUse,
        PubRecReason::QuotaExceeded => PubAckReason::QuotaExceeded,
        PubRecReason::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
    };
    puback_refusal(same, text)
}

fn refusal(code: u8, name: &str, text: Option<&str>) -> Refusal {
    let reason = match text {
        Some(t) if !t.is_empty() => format!("({name}: {t})"),
        _ => format!("({name})"),
    };
    Refusal { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_matching_subscribers_is_success_and_0x87_is_a_refusal() {
        assert_eq!(
            puback_refusal(PubAckReason::NoMatchingSubscribers, None),
            None
        );
        let r = puback_refusal(PubAckReason::NotAuthorized, Some("acl")).expect("refused");
        assert_eq!(r.code, 0x87);
        assert!(r.to_string().contains("0x87 (not authorized: acl)"), "{r}");
        assert_eq!(
            pubrec_refusal(PubRecReason::QuotaExceeded, None).map(|r| r.code),
            Some(0x97)
        );
    }

    #[test]
    fn a_connack_without_properties_allows_everything() {
        assert_eq!(Limits::from_connack(None), Limits::default());
        let p = ConnAckProperties {
            session_expiry_interval: None,
            receive_max: Some(5),
            max_qos: Some(1),
            retain_available: Some(0),
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: Some(10),
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        };
        let l = Limits::from_connack(Some(&p));
        assert_eq!(
            (l.receive_max, l.max_qos, l.retain, l.topic_alias_max),
            (5, 1, false, 10)
        );
    }
}
