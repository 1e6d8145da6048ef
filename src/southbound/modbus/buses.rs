//! Modbus RTU buses: the cross-device checks of devices sharing one serial
//! port, and grouping RTU devices into one bus (one source) per port.
//!
//! Owns only those two functions. Must not start anything.

use std::collections::HashMap;
use std::path::PathBuf;

use super::config::ModbusRtuConfig;
use super::rtu::BusConfig;
use crate::config::Report;

/// Cross-device checks: devices on one port agree on the line settings and
/// use distinct unit ids. `devices` are `(yaml path, config)`.
pub(crate) fn validate_buses(devices: &[(String, &ModbusRtuConfig)], report: &mut Report) {
    let mut first: HashMap<&PathBuf, (&str, &ModbusRtuConfig)> = HashMap::new();
    let mut units: HashMap<(&PathBuf, u8), &str> = HashMap::new();
    for (path, d) in devices {
        match first.get(&d.port) {
            None => {
                first.insert(&d.port, (path, d));
            }
            Some((fpath, f)) if f.line() != d.line() => report.add(
                format!("{path}.port"),
                format!(
                    "{} is shared with {} ({fpath}) but the line settings differ: \
                     baud, parity, data_bits and stop_bits must match on one bus",
                    d.port.display(),
                    f.name
                ),
            ),
            Some(_) => {}
        }
        if let Some(other) = units.insert((&d.port, d.unit), path) {
            report.add(
                format!("{path}.unit"),
                format!(
                    "unit {} is already used on {} by {other}",
                    d.unit,
                    d.port.display()
                ),
            );
        }
    }
}

/// Groups RTU devices by port: one bus (one source) per port, in config order.
pub fn buses(devices: &[&ModbusRtuConfig]) -> Vec<BusConfig> {
    let mut out: Vec<BusConfig> = Vec::new();
    for d in devices {
        match out.iter_mut().find(|b| b.port == d.port) {
            Some(b) => b.devices.push((*d).clone()),
            None => out.push(BusConfig {
                port: d.port.clone(),
                baud: d.baud,
                parity: d.parity,
                data_bits: d.data_bits,
                stop_bits: d.stop_bits,
                devices: vec![(*d).clone()],
            }),
        }
    }
    out
}
