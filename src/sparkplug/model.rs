//! What the node announces: one Sparkplug device per configured field
//! device, one metric per point, with its alias, datatype (from the point's
//! type), engineering unit, scale and writable flag; and the node's own
//! metrics (`bdSeq`, `Node Control/Rebirth`).
//!
//! Owns [`DeviceModel`], [`MetricDef`] and [`build`]. Reads the device
//! configs only; must not start anything, encode payloads or know topics.

use std::sync::Arc;

use super::payload::DataType;
use crate::ports::points::PointKind;
use crate::southbound::catalogue;
use crate::southbound::devices::DeviceConfig;
use crate::southbound::modbus::points::{DataType as RegType, PointConfig};

/// The NBIRTH / NDEATH birth-death sequence metric.
pub const BD_SEQ: &str = "bdSeq";
/// The NBIRTH metric a host writes `true` to for all births again.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// Alias of [`REBIRTH`]; point aliases start after it.
pub const REBIRTH_ALIAS: u64 = 1;

/// One point as a Sparkplug metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    pub name: Arc<str>,
    /// Unique within the edge node; stable across restarts while the
    /// configured devices and points stay in the same order.
    pub alias: u64,
    pub datatype: DataType,
    pub unit: Option<String>,
    pub scale: Option<f64>,
    pub writable: bool,
    /// The point's own deadband (Modbus `deadband:`), else `None`.
    pub deadband: Option<f64>,
}

/// One field device as a Sparkplug device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceModel {
    pub name: Arc<str>,
    pub metrics: Vec<MetricDef>,
}

impl DeviceModel {
    /// The index of the metric named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.metrics.iter().position(|m| &*m.name == name)
    }

    /// The index of the metric with `alias`.
    pub fn index_of_alias(&self, alias: u64) -> Option<usize> {
        self.metrics.iter().position(|m| m.alias == alias)
    }
}

/// A Modbus point's datatype: the register type, or Double when `scale`
/// or `offset` make it a real number.
fn modbus_type(p: &PointConfig) -> DataType {
    if p.scale.is_some() || p.offset.is_some() {
        return DataType::Double;
    }
    match p.data_type() {
        RegType::Bool => DataType::Boolean,
        RegType::U16 => DataType::UInt16,
        RegType::I16 => DataType::Int16,
        RegType::U32 => DataType::UInt32,
        RegType::I32 => DataType::Int32,
        RegType::U64 => DataType::UInt64,
        RegType::I64 => DataType::Int64,
        RegType::F32 => DataType::Float,
        RegType::F64 => DataType::Double,
        RegType::String => DataType::String,
    }
}

/// The datatype of a point known only by its kind (simulated, serial).
fn kind_type(kind: PointKind) -> DataType {
    match kind {
        PointKind::Bool => DataType::Boolean,
        PointKind::Integer { .. } => DataType::Int64,
        PointKind::Float => DataType::Double,
        PointKind::Text => DataType::String,
    }
}

fn modbus_points(device: &DeviceConfig) -> Option<&[PointConfig]> {
    match device {
        DeviceConfig::ModbusTcp(c) => Some(&c.points),
        DeviceConfig::ModbusRtu(c) => Some(&c.points),
        DeviceConfig::ModbusRtuTcp(c) => Some(&c.points),
        _ => None,
    }
}

/// The devices of the config as Sparkplug devices, in config order, with
/// aliases numbered from `REBIRTH_ALIAS + 1` across all of them.
pub fn build(devices: &[DeviceConfig]) -> Vec<DeviceModel> {
    let specs = catalogue::build(devices);
    let mut alias = REBIRTH_ALIAS;
    devices
        .iter()
        .zip(specs)
        .map(|(config, spec)| {
            let modbus = modbus_points(config);
            let metrics = spec
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    alias += 1;
                    let point = modbus.and_then(|m| m.get(i));
                    MetricDef {
                        name: p.name.as_str().into(),
                        alias,
                        datatype: point.map_or(kind_type(p.kind), modbus_type),
                        unit: p.unit.clone(),
                        scale: point.and_then(|m| m.scale),
                        writable: p.writable,
                        deadband: point.and_then(|m| m.deadband),
                    }
                })
                .collect();
            DeviceModel {
                name: spec.name.as_str().into(),
                metrics,
            }
        })
        .collect()
}
