//! The `devices:` list: tells device kinds apart by `kind` and hands each
//! entry to the config struct of its adapter.
//!
//! Owns the list of kinds this build knows. Adding a kind means one arm here
//! and one struct beside its adapter in `southbound/`. Must not validate
//! adapter-specific fields (the adapter structs do that).

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::Report;
use crate::southbound::modbus::{ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig};
use crate::southbound::serial::SerialConfig;
use crate::southbound::simulated::SimulatedConfig;

/// Device kinds this build accepts, as written in `kind:`.
pub const DEVICE_KINDS: &[&str] = &[
    "simulated",
    "modbus-tcp",
    "modbus-rtu",
    "modbus-rtu-tcp",
    "serial",
];

/// Kinds that the design names but this build does not have yet.
const PLANNED_KINDS: &[&str] = &[];

/// One entry of `devices:`.
#[derive(Debug, Clone)]
pub enum DeviceConfig {
    Simulated(SimulatedConfig),
    ModbusTcp(ModbusTcpConfig),
    ModbusRtu(ModbusRtuConfig),
    ModbusRtuTcp(ModbusRtuTcpConfig),
    Serial(Box<SerialConfig>),
}

impl DeviceConfig {
    pub fn name(&self) -> &str {
        match self {
            DeviceConfig::Simulated(c) => &c.name,
            DeviceConfig::ModbusTcp(c) => &c.name,
            DeviceConfig::ModbusRtu(c) => &c.name,
            DeviceConfig::ModbusRtuTcp(c) => &c.name,
            DeviceConfig::Serial(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::Simulated(_) => "simulated",
            DeviceConfig::ModbusTcp(_) => "modbus-tcp",
            DeviceConfig::ModbusRtu(_) => "modbus-rtu",
            DeviceConfig::ModbusRtuTcp(_) => "modbus-rtu-tcp",
            DeviceConfig::Serial(_) => "serial",
        }
    }
}

fn typed<T: DeserializeOwned>(value: Value, path: &str, report: &mut Report) -> Option<T> {
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            report.add_serde(path, e);
            None
        }
    }
}

/// Parses every device entry; problems go to `report`, bad entries are skipped.
/// Returns the devices that parsed, each with its index in the YAML list (so
/// later messages name the right `devices[i]` when an earlier entry failed).
pub(super) fn parse_all(values: Vec<Value>, report: &mut Report) -> Vec<(usize, DeviceConfig)> {
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let path = format!("devices[{i}]");
        let Value::Mapping(mut map) = value else {
            report.add(
                path,
                "a device must be a mapping with at least `name` and `kind`",
            );
            continue;
        };
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => {
                report.add(
                    format!("{path}.kind"),
                    format!("must be one of: {}", DEVICE_KINDS.join(", ")),
                );
                continue;
            }
            None => {
                report.add(
                    path,
                    format!("missing `kind` (one of: {})", DEVICE_KINDS.join(", ")),
                );
                continue;
            }
        };
        let value = Value::Mapping(map);
        let parsed = match kind.as_str() {
            "simulated" => typed(value, &path, report).map(DeviceConfig::Simulated),
            "modbus-tcp" => typed(value, &path, report).map(DeviceConfig::ModbusTcp),
            "modbus-rtu" => typed(value, &path, report).map(DeviceConfig::ModbusRtu),
            "modbus-rtu-tcp" => typed(value, &path, report).map(DeviceConfig::ModbusRtuTcp),
            "serial" => typed(value, &path, report).map(|c| DeviceConfig::Serial(Box::new(c))),
            other => {
                let why = if PLANNED_KINDS.contains(&other) {
                    format!("device kind `{other}` is not available in this build yet")
                } else {
                    format!("unknown device kind `{other}`")
                };
                report.add(
                    format!("{path}.kind"),
                    format!("{why}; kinds available: {}", DEVICE_KINDS.join(", ")),
                );
                None
            }
        };
        out.extend(parsed.map(|d| (i, d)));
    }
    out
}

/// Resolves paths written in device entries (serial decoder scripts)
/// against the config file's folder.
pub(super) fn resolve_paths(devices: &mut [DeviceConfig], config_dir: &std::path::Path) {
    for d in devices {
        if let DeviceConfig::Serial(c) = d {
            c.resolve_paths(config_dir);
        }
    }
}
