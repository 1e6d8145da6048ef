//! The point catalogue's value types: every configured point of every
//! device with what the status page and Home Assistant discovery need to
//! know about it (unit, kind of value, writable, how often it is sampled).
//!
//! Owns [`DeviceSpec`], [`PointSpec`] and [`PointKind`]; southbound fills
//! them from its device configs (`southbound::catalogue::build`). Plain data: must
//! not know any device protocol or topic.

use std::time::Duration;

/// What kind of value a point carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointKind {
    Bool,
    /// An integer type, with its range when known.
    Integer {
        min: f64,
        max: f64,
    },
    /// A float, or an integer with `scale` / `offset`.
    Float,
    /// A 32-bit float as the device holds it (a Modbus `f32` register
    /// without `scale` / `offset`): Sparkplug's Float.
    Float32,
    Text,
}

/// One configured point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub name: String,
    pub unit: Option<String>,
    pub kind: PointKind,
    pub writable: bool,
    /// The `min` / `max` a writable point declares: writes outside are
    /// refused (Home Assistant offers this range instead of the type's).
    pub write_range: (Option<f64>, Option<f64>),
    /// The factor a raw value is multiplied by (Modbus `scale`), for
    /// consumers that announce it (Sparkplug's `scale` property).
    pub scale: Option<f64>,
    /// The point's own report-by-exception deadband (Modbus `deadband`).
    pub deadband: Option<f64>,
}

/// One configured device and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    pub name: String,
    pub kind: &'static str,
    /// Sampling interval (`poll`, or a serial `request.every`); `None` when
    /// the device sends on its own.
    pub poll: Option<Duration>,
    pub points: Vec<PointSpec>,
}
