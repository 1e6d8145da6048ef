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

/// A point's datatype from what the catalogue says of it: an integer's
/// range names its width and sign (a Modbus register type), an unscaled
/// 32-bit float register is Float, any other float or a scaled integer is
/// Double.
fn datatype(kind: PointKind) -> DataType {
    match kind {
        PointKind::Bool => DataType::Boolean,
        PointKind::Float => DataType::Double,
        PointKind::Float32 => DataType::Float,
        PointKind::Text => DataType::String,
        PointKind::Integer { min, max } => {
            let fits = |lo: f64, hi: f64| min >= lo && max <= hi;
            match () {
                _ if fits(0.0, 65_535.0) => DataType::UInt16,
                _ if fits(-32_768.0, 32_767.0) => DataType::Int16,
                _ if fits(0.0, 4_294_967_295.0) => DataType::UInt32,
                _ if fits(-2_147_483_648.0, 2_147_483_647.0) => DataType::Int32,
                _ if min >= 0.0 => DataType::UInt64,
                _ => DataType::Int64,
            }
        }
    }
}

/// The devices of the config as Sparkplug devices, in config order, with
/// aliases numbered from `REBIRTH_ALIAS + 1` across all of them.
pub fn build(devices: &[DeviceConfig]) -> Vec<DeviceModel> {
    let mut alias = REBIRTH_ALIAS;
    catalogue::build(devices)
        .into_iter()
        .map(|spec| {
            let metrics = spec
                .points
                .iter()
                .map(|p| {
                    alias += 1;
                    MetricDef {
                        name: p.name.as_str().into(),
                        alias,
                        datatype: datatype(p.kind),
                        unit: p.unit.clone(),
                        scale: p.scale,
                        writable: p.writable,
                        deadband: p.deadband,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each Modbus register type is announced as the Sparkplug datatype
    /// docs/sparkplug.md lists ("Datatypes").
    #[test]
    fn a_points_datatype_follows_its_register_type() {
        let yaml = "gateway:\n  id: gw\ndevices:\n  - name: plc\n    kind: modbus-tcp\n    address: \"127.0.0.1:502\"\n    points:\n      - { name: f, table: holding, address: 0, type: f32 }\n      - { name: fs, table: holding, address: 2, type: f32, scale: 0.1 }\n      - { name: d, table: holding, address: 4, type: f64 }\n      - { name: u, table: holding, address: 8, type: u16 }\n      - { name: i, table: holding, address: 9, type: i16 }\n      - { name: is, table: holding, address: 10, type: i16, scale: 0.1 }\n      - { name: l, table: holding, address: 11, type: i32 }\n      - { name: c, table: coil, address: 0 }\n";
        let path = std::path::Path::new("/nonexistent/fieldgate.yaml");
        let cfg = crate::settings::parse(yaml, path).expect("valid config");
        let models = build(&cfg.devices);
        let got: Vec<(&str, DataType)> = models[0]
            .metrics
            .iter()
            .map(|m| (&*m.name, m.datatype))
            .collect();
        assert_eq!(
            got,
            [
                ("f", DataType::Float),
                ("fs", DataType::Double),
                ("d", DataType::Double),
                ("u", DataType::UInt16),
                ("i", DataType::Int16),
                ("is", DataType::Double),
                ("l", DataType::Int32),
                ("c", DataType::Boolean),
            ]
        );
    }
}
