//! [`Message`]: an application message as the broker routes it (topic,
//! payload, QoS and retain flag as published, and what MQTT 5 adds: the
//! properties passed on to subscribers unchanged, and the expiry). Cheap
//! to clone: the topic, payload and properties are shared by every
//! subscriber it goes to. Must not know about sessions or sockets.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// The MQTT 5 properties of a PUBLISH that go with the message to every
/// subscriber unchanged (MQTT-3.3.2-4/-15/-16/-17/-20: payload format
/// indicator, response topic, correlation data, user properties, content
/// type).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageProps {
    /// Payload Format Indicator: 1 = UTF-8.
    pub payload_format: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// In the order the publisher sent them (MQTT-3.3.2-18).
    pub user: Vec<(String, String)>,
}

impl MessageProps {
    pub fn is_empty(&self) -> bool {
        self.payload_format.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties passed on (none for 3.1.1 publishers).
    pub props: Option<Arc<MessageProps>>,
    /// When the message expires: Unix time in ms (Message Expiry Interval
    /// added to the time it was received, MQTT-3.3.2-5). Wall clock, so it
    /// holds across restarts in the store.
    pub expires_ms: Option<u64>,
}

/// Now as Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Message {
    pub fn new(topic: Arc<str>, payload: Bytes, qos: u8, retain: bool) -> Message {
        Message {
            topic,
            payload,
            qos,
            retain,
            props: None,
            expires_ms: None,
        }
    }

    /// Bytes counted against the queue limits.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// Sets the expiry `interval` from now.
    pub fn expiring_in(mut self, interval: Duration) -> Message {
        self.expires_ms = Some(now_ms().saturating_add(interval.as_millis() as u64));
        self
    }

    /// Seconds left before it expires at `now_ms` (rounded up, at least
    /// 1 while not expired: MQTT-3.3.2-6); `None` when it never expires.
    pub fn remaining_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_ms
            .map(|at| (at.saturating_sub(now_ms).div_ceil(1000)).min(u32::MAX as u64) as u32)
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_interval_rounds_up_and_ends_at_expiry() {
        let m = Message {
            expires_ms: Some(10_500),
            ..Message::new("t".into(), Bytes::new(), 1, false)
        };
        assert_eq!(m.remaining_secs(10_000), Some(1));
        assert_eq!(m.remaining_secs(8_000), Some(3));
        assert!(!m.expired(10_499));
        assert!(m.expired(10_500));
        assert_eq!(
            Message::new("t".into(), Bytes::new(), 0, false).remaining_secs(0),
            None
        );
    }
}
