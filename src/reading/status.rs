//! Status topics (docs/design.md §4): `{gateway}/status` (`online` / `offline`,
//! retained) and `{gateway}/status/{device}` (retained JSON
//! `{"state", "error", "ts"}`).
//!
//! Owns the topic names and payload shapes. Must not decide when a device
//! is online: callers say so.

use bytes::Bytes;

use crate::reading::{Publish, Qos, now_ms};

/// `{gateway}/status`.
pub fn gateway_topic(gateway: &str) -> String {
    format!("{gateway}/status")
}

/// The retained gateway status message.
pub fn gateway(gateway: &str, online: bool) -> Publish {
    Publish {
        topic: gateway_topic(gateway),
        payload: Bytes::from_static(if online { b"online" } else { b"offline" }),
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}

/// `{gateway}/status/{device}`.
pub fn device_topic(gateway: &str, device: &str) -> String {
    format!("{gateway}/status/{device}")
}

/// The retained device status message. `error` is omitted when `None`.
pub fn device(gateway: &str, device: &str, online: bool, error: Option<&str>) -> Publish {
    let mut map = serde_json::Map::with_capacity(3);
    map.insert(
        "state".into(),
        if online { "online" } else { "offline" }.into(),
    );
    if let Some(e) = error {
        map.insert("error".into(), e.into());
    }
    map.insert("ts".into(), now_ms().into());
    Publish {
        topic: device_topic(gateway, device),
        payload: Bytes::from(serde_json::Value::Object(map).to_string()),
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}
