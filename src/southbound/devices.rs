//! The `devices:` list: tells device kinds apart by `kind`, hands each
//! entry to the config struct of its adapter, and runs the checks across
//! devices (names, uniqueness, RTU buses).
//!
//! Owns the list of kinds this build knows. Adding a kind means its adapter
//! folder, one arm per `match` here, and one arm in [`super::build_all`].
//! Must not validate adapter-specific fields (the adapter structs do that).

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use std::collections::HashMap;
use std::path::Path;

use super::guard::WriteLimits;
use super::modbus::{ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig};
use super::serial::SerialConfig;
use super::simulated::SimulatedConfig;
use crate::config::{Report, is_valid_name};

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

    /// The writable points and the limits the commands task checks
    /// their writes against.
    pub fn write_limits(&self) -> Vec<(&str, WriteLimits)> {
        let points = match self {
            DeviceConfig::ModbusTcp(c) => &c.points,
            DeviceConfig::ModbusRtu(c) => &c.points,
            DeviceConfig::ModbusRtuTcp(c) => &c.points,
            DeviceConfig::Simulated(_) | DeviceConfig::Serial(_) => return Vec::new(),
        };
        points
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.write_limits()?)))
            .collect()
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
pub(crate) fn parse_all(values: Vec<Value>, report: &mut Report) -> Vec<(usize, DeviceConfig)> {
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
pub(crate) fn resolve_paths(devices: &mut [DeviceConfig], config_dir: &Path) {
    for d in devices {
        if let DeviceConfig::Serial(c) = d {
            c.resolve_paths(config_dir);
        }
    }
}

/// Checks every device: valid and unique names, the adapter's own checks,
/// and the RTU devices that share a port. `positions[i]` is the index in
/// the YAML list of `devices[i]`; `config_file` anchors relative paths.
pub(crate) fn validate_all(
    devices: &[DeviceConfig],
    positions: &[usize],
    config_file: &Path,
    report: &mut Report,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut rtu = Vec::new();
    let mut rtu_tcp = Vec::new();
    for (&i, dev) in positions.iter().zip(devices) {
        let path = format!("devices[{i}]");
        let name = dev.name();
        if !is_valid_name(name) {
            report.add(
                format!("{path}.name"),
                format!(
                    "{name:?} is not a valid device name: use letters, digits, `_` and `-` only"
                ),
            );
        } else if name == "status" {
            report.add(
                format!("{path}.name"),
                "`status` is reserved for status topics",
            );
        }
        if let Some(first) = seen.insert(name, i) {
            report.add(
                format!("{path}.name"),
                format!("duplicate device name {name:?} (also devices[{first}])"),
            );
        }
        match dev {
            DeviceConfig::Simulated(c) => c.validate(&path, report),
            DeviceConfig::ModbusTcp(c) => c.validate(&path, report),
            DeviceConfig::ModbusRtu(c) => {
                c.validate(&path, report);
                rtu.push((path.clone(), c));
            }
            DeviceConfig::ModbusRtuTcp(c) => {
                c.validate(&path, report);
                rtu_tcp.push((path.clone(), c));
            }
            DeviceConfig::Serial(c) => c.validate(config_file, &path, report),
        }
    }
    super::modbus::validate_buses(&rtu, report);
    super::modbus::validate_tcp_buses(&rtu_tcp, report);
}
