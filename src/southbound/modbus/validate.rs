//! Semantic checks of the Modbus kinds (reported with YAML paths): the
//! settings every kind shares, each point, each kind's own keys, and the
//! cross-device rules of a shared bus.
//!
//! Owns the checks only. Must not start anything.

use std::collections::HashMap;
use std::path::PathBuf;

use super::config::{
    BitWrite, Common, Framing, ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig, Parity,
};
use super::points::{self, DataType, PointConfig};
use crate::config::Report;

impl Common {
    fn validate(&self, path: &str, rtu: bool, report: &mut Report) {
        if self.poll.get().is_zero() {
            report.add(format!("{path}.poll"), "must be greater than 0");
        }
        if self.timeout.get().is_zero() {
            report.add(format!("{path}.timeout"), "must be greater than 0");
        }
        if rtu && self.unit > 247 {
            report.add(
                format!("{path}.unit"),
                format!(
                    "unit {} is not a valid RTU unit id (1 to 247, or 0 for broadcast writes)",
                    self.unit
                ),
            );
        }
        if rtu && self.unit == 0 {
            // a broadcast is never answered: nothing to read
            for (i, p) in self.points.iter().enumerate() {
                if !p.writable {
                    report.add(
                        format!("{path}.points[{i}].writable"),
                        "unit 0 is the broadcast address: it is never read, so every point must be `writable: true`",
                    );
                }
                if p.bit.is_some() && self.bit_write == BitWrite::ReadModifyWrite {
                    report.add(
                        format!("{path}.points[{i}].bit"),
                        "a broadcast cannot read the register first: use `bit_write: mask`",
                    );
                }
            }
        }
        if !(1..=125).contains(&self.max_registers_per_request) {
            report.add(
                format!("{path}.max_registers_per_request"),
                "must be between 1 and 125 (the Modbus limit)",
            );
        }
        if self.address_base > 1 {
            report.add(format!("{path}.address_base"), "must be 0 or 1");
        }
        if self.backoff_max.get().is_zero() {
            report.add(format!("{path}.backoff_max"), "must be greater than 0");
        }
        crate::config::check_point_names(path, self.points.iter().map(|p| p.name.as_str()), report);
        for (i, p) in self.points.iter().enumerate() {
            let pp = format!("{path}.points[{i}]");
            self.validate_point(p, &pp, report);
        }
    }

    fn validate_point(&self, p: &PointConfig, pp: &str, report: &mut Report) {
        if let Some(d) = p.deadband
            && !(d.is_finite() && d >= 0.0)
        {
            report.add(
                format!("{pp}.deadband"),
                format!("{d} is not a deadband: give a number >= 0"),
            );
        }
        let ty = p.data_type();
        let base = u32::from(self.address_base);
        if p.address < base {
            report.add(
                format!("{pp}.address"),
                "address 0 does not exist with address_base: 1 (numbers start at 1)",
            );
        } else if p.address - base + u32::from(p.count()) > 65536 {
            report.add(
                format!("{pp}.address"),
                format!(
                    "address {} is beyond the last Modbus address (65535 with address_base 0)",
                    p.address
                ),
            );
        }
        if p.table.is_bits() && ty != DataType::Bool {
            report.add(
                format!("{pp}.type"),
                format!(
                    "a {} holds single bits: the type must be bool, not {}",
                    p.table.as_str(),
                    ty.as_str()
                ),
            );
        }
        if let Some(bit) = p.bit {
            if p.table.is_bits() {
                report.add(
                    format!("{pp}.bit"),
                    "`bit` applies to holding and input registers only",
                );
            }
            if bit > 15 {
                report.add(format!("{pp}.bit"), "must be between 0 and 15");
            }
            if ty != DataType::Bool {
                report.add(format!("{pp}.type"), "a point with `bit` is a bool");
            }
        }
        match (ty, p.length) {
            (DataType::String, None) => report.add(
                format!("{pp}.length"),
                "a string needs `length` (in registers)",
            ),
            (DataType::String, Some(n))
                if n == 0 || n > self.max_registers_per_request.min(125) =>
            {
                report.add(
                    format!("{pp}.length"),
                    format!(
                        "must be between 1 and {} (max_registers_per_request)",
                        self.max_registers_per_request.min(125)
                    ),
                )
            }
            (DataType::String, Some(_)) => {}
            (_, Some(_)) => report.add(
                format!("{pp}.length"),
                "`length` applies to type string only",
            ),
            (_, None) => {}
        }
        if !p.table.is_bits() && p.count() > self.max_registers_per_request {
            report.add(
                format!("{pp}.type"),
                format!(
                    "{} spans {} registers, more than max_registers_per_request ({})",
                    ty.as_str(),
                    p.count(),
                    self.max_registers_per_request
                ),
            );
        }
        let numeric = !matches!(ty, DataType::Bool | DataType::String);
        for (key, v) in [("scale", p.scale), ("offset", p.offset)] {
            let Some(v) = v else { continue };
            if !numeric {
                report.add(
                    format!("{pp}.{key}"),
                    format!("`{key}` applies to numeric types only, not {}", ty.as_str()),
                );
            } else if !v.is_finite() || (key == "scale" && v == 0.0) {
                report.add(format!("{pp}.{key}"), format!("{v} is not a usable {key}"));
            }
        }
        validate_write_limits(p, numeric, pp, report);
        if p.writable && !matches!(p.table, points::Table::Coil | points::Table::Holding) {
            report.add(
                format!("{pp}.writable"),
                format!(
                    "{} is a read-only table; only coil and holding points can be writable",
                    p.table.as_str()
                ),
            );
        }
    }
}

/// `min`, `max` and `max_write_rate` limit writes: writable points only,
/// `min`/`max` on numeric points only and in order.
fn validate_write_limits(p: &PointConfig, numeric: bool, pp: &str, report: &mut Report) {
    for (key, v) in [("min", p.min), ("max", p.max)] {
        let Some(v) = v else { continue };
        if !p.writable {
            report.add(
                format!("{pp}.{key}"),
                format!("`{key}` limits writes: it applies to writable points only (add `writable: true`, or remove `{key}`)"),
            );
        } else if !numeric {
            report.add(
                format!("{pp}.{key}"),
                format!(
                    "`{key}` applies to numeric points only, not {}",
                    p.data_type().as_str()
                ),
            );
        } else if !v.is_finite() {
            report.add(format!("{pp}.{key}"), format!("{v} is not a usable {key}"));
        }
    }
    if let Some((lo, hi)) = p.data_type().raw_range() {
        // what the register can hold, in the point's units
        let codec = p.codec();
        let (a, b) = (codec.apply_scale(lo), codec.apply_scale(hi));
        let (lo, hi) = (a.min(b), a.max(b));
        for (key, v) in [("min", p.min), ("max", p.max)] {
            if let Some(v) = v.filter(|v| *v < lo || *v > hi) {
                report.add(
                    format!("{pp}.{key}"),
                    format!(
                        "{key} {v} is beyond what this {} point can hold ({lo} to {hi})",
                        p.data_type().as_str()
                    ),
                );
            }
        }
    }
    if let (Some(lo), Some(hi)) = (p.min, p.max)
        && lo > hi
    {
        report.add(
            format!("{pp}.min"),
            format!("min {lo} is greater than max {hi}: no value could be written"),
        );
    }
    if p.max_write_rate.is_some() && !p.writable {
        report.add(
            format!("{pp}.max_write_rate"),
            "`max_write_rate` limits writes: it applies to writable points only (add `writable: true`, or remove it)",
        );
    }
}

fn check_address(address: &str, path: &str, report: &mut Report) {
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        report.add(
            format!("{path}.address"),
            format!("{address:?} is not host:port (e.g. 192.168.1.50:502)"),
        );
    }
}

impl ModbusTcpConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        check_address(&self.address, path, report);
        self.common().validate(path, false, report);
    }
}

impl ModbusRtuTcpConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        check_address(&self.address, path, report);
        self.common().validate(path, true, report);
    }
}

/// Cross-device checks of converters: devices behind one address use
/// distinct unit ids and agree on the connection settings.
pub(crate) fn validate_tcp_buses(devices: &[(String, &ModbusRtuTcpConfig)], report: &mut Report) {
    let mut first: HashMap<&str, (&str, &ModbusRtuTcpConfig)> = HashMap::new();
    let mut units: HashMap<(&str, u8), &str> = HashMap::new();
    for (path, d) in devices {
        match first.get(d.address.as_str()) {
            None => {
                first.insert(&d.address, (path, d));
            }
            Some((fpath, f))
                if (f.framing, f.close_after_poll) != (d.framing, d.close_after_poll) =>
            {
                report.add(
                    format!("{path}.address"),
                    format!(
                        "{} is shared with {} ({fpath}) but the settings differ: \
                         framing and close_after_poll must match on one converter",
                        d.address, f.name
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(other) = units.insert((&d.address, d.unit), path) {
            report.add(
                format!("{path}.unit"),
                format!(
                    "unit {} is already used on {} by {other}",
                    d.unit, d.address
                ),
            );
        }
    }
}

impl ModbusRtuConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        if self.baud == 0 {
            report.add(format!("{path}.baud"), "must be greater than 0");
        }
        if !matches!(self.stop_bits, 1 | 2) {
            report.add(format!("{path}.stop_bits"), "must be 1 or 2");
        }
        if !matches!(self.data_bits, 7 | 8) {
            report.add(format!("{path}.data_bits"), "must be 7 or 8");
        }
        self.common().validate(path, true, report);
    }

    /// The serial line settings, which all devices on one port must share.
    pub fn line(&self) -> (u32, Parity, u8, u8, Framing) {
        (
            self.baud,
            self.parity,
            self.data_bits,
            self.stop_bits,
            self.framing,
        )
    }
}

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
                     baud, parity, data_bits, stop_bits and framing must match on one bus",
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
