//! The point catalogue: every configured point of every device with what
//! the status page and Home Assistant discovery need to know about it (unit,
//! kind of value, writable, how often it is sampled), as the value types of
//! the ports leaf, which the wiring hands to ops.
//!
//! Owns [`build`]; each kind says how its points read
//! ([`Device::points`](super::kind::Device::points)). Must not start
//! anything or know about topics.

use super::devices::DeviceConfig;
use crate::ports::points::DeviceSpec;

/// The devices of `devices` with their points, in config order.
pub fn build(devices: &[DeviceConfig]) -> Vec<DeviceSpec> {
    devices
        .iter()
        .map(|d| DeviceSpec {
            name: d.name().to_string(),
            kind: d.kind(),
            poll: d.device().poll(),
            points: d.device().points(),
        })
        .collect()
}
