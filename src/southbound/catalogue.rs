//! The point catalogue: every configured point of every device with what
//! the status page and Home Assistant discovery need to know about it (unit,
//! kind of value, writable, how often it is sampled), as the value types of
//! the ports leaf, which the wiring hands to ops.
//!
//! Owns [`build`] (how each kind's point config reads as a
//! [`PointKind`]). Reads the device config structs only; must not start
//! anything or know about topics.

use super::devices::DeviceConfig;
use super::modbus::points::{DataType, PointConfig};
use super::serial::decoder::PointType;
use super::simulated::Signal;
use crate::ports::points::{DeviceSpec, PointKind, PointSpec};
use crate::reading::Value;

fn modbus_kind(t: DataType, scaled: bool) -> PointKind {
    let int = |min: f64, max: f64| {
        if scaled {
            PointKind::Float
        } else {
            PointKind::Integer { min, max }
        }
    };
    match t {
        DataType::Bool => PointKind::Bool,
        DataType::U16 => int(0.0, 65_535.0),
        DataType::I16 => int(-32_768.0, 32_767.0),
        DataType::U32 => int(0.0, 4_294_967_295.0),
        DataType::I32 => int(-2_147_483_648.0, 2_147_483_647.0),
        DataType::U64 => int(0.0, 1e15),
        DataType::I64 => int(-1e15, 1e15),
        DataType::F32 | DataType::F64 => PointKind::Float,
        DataType::String => PointKind::Text,
    }
}

fn modbus_points(points: &[PointConfig]) -> Vec<PointSpec> {
    points
        .iter()
        .map(|p| PointSpec {
            name: p.name.clone(),
            unit: p.unit.clone(),
            kind: modbus_kind(p.data_type(), p.scale.is_some() || p.offset.is_some()),
            writable: p.writable,
            write_range: (p.min, p.max),
        })
        .collect()
}

/// The devices of `devices` with their points, in config order.
pub fn build(devices: &[DeviceConfig]) -> Vec<DeviceSpec> {
    devices
        .iter()
        .map(|d| {
            let (poll, points) = match d {
                DeviceConfig::Simulated(c) => (
                    Some(c.poll.get()),
                    c.points
                        .iter()
                        .map(|p| PointSpec {
                            name: p.name.clone(),
                            unit: p.unit.clone(),
                            kind: match (&p.signal, &p.value) {
                                (Signal::Constant, Some(Value::Bool(_))) => PointKind::Bool,
                                (Signal::Constant, Some(Value::String(_))) => PointKind::Text,
                                _ => PointKind::Float,
                            },
                            writable: false,
                            write_range: (None, None),
                        })
                        .collect(),
                ),
                DeviceConfig::ModbusTcp(c) => (Some(c.poll.get()), modbus_points(&c.points)),
                DeviceConfig::ModbusRtu(c) => (Some(c.poll.get()), modbus_points(&c.points)),
                DeviceConfig::ModbusRtuTcp(c) => (Some(c.poll.get()), modbus_points(&c.points)),
                DeviceConfig::Serial(c) => (
                    c.request.as_ref().map(|r| r.every.get()),
                    c.points
                        .iter()
                        .map(|p| PointSpec {
                            name: p.name.clone(),
                            unit: p.unit.clone(),
                            kind: match p.kind {
                                Some(PointType::Bool) => PointKind::Bool,
                                Some(PointType::String) => PointKind::Text,
                                _ => PointKind::Float,
                            },
                            writable: false,
                            write_range: (None, None),
                        })
                        .collect(),
                ),
            };
            DeviceSpec {
                name: d.name().to_string(),
                kind: d.kind(),
                poll,
                points,
            }
        })
        .collect()
}
