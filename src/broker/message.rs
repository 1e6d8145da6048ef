//! [`Message`]: an application message as the broker routes it (topic,
//! payload, QoS and retain flag as published). Cheap to clone: the topic
//! and payload are shared by every subscriber it goes to.
//! Must not know about sessions or sockets.

use std::sync::Arc;

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

impl Message {
    pub fn new(topic: Arc<str>, payload: Bytes, qos: u8, retain: bool) -> Message {
        Message {
            topic,
            payload,
            qos,
            retain,
        }
    }

    /// Bytes counted against the queue limits.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
