//! Config of the Modbus kinds: `ModbusTcpConfig`, `ModbusRtuConfig`, the
//! settings they share, and their semantic checks (reported with YAML paths).
//!
//! Owns the Modbus config keys and their defaults. Must not start anything.

use std::path::PathBuf;

use serde::Deserialize;

use super::plan::{self, Limits, ReadRequest, Span};
use super::points::{self, DataType, PointConfig};
use crate::config::{Duration, Report};
pub use crate::southbound::line::Parity;

/// Declares a Modbus device config struct: the kind's own fields, then the
/// fields both kinds share (serde's `flatten` would lose the YAML paths of
/// errors and the unknown-field check, so the shared fields are repeated).
macro_rules! modbus_device_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub name: String,
            $($(#[$fmeta])* pub $field: $ty,)*
            #[serde(default = "default_unit")]
            pub unit: u8,
            #[serde(default = "default_poll")]
            pub poll: Duration,
            #[serde(default = "default_timeout")]
            pub timeout: Duration,
            #[serde(default = "default_retries")]
            pub retries: u32,
            #[serde(default = "default_max_gap")]
            pub max_gap: u16,
            #[serde(default = "default_max_registers")]
            pub max_registers_per_request: u16,
            #[serde(default)]
            pub address_base: u8,
            #[serde(default = "default_backoff_max")]
            pub backoff_max: Duration,
            #[serde(default)]
            pub write_multiple: bool,
            #[serde(default)]
            pub points: Vec<PointConfig>,
        }

        impl $name {
            /// The settings both kinds share.
            pub fn common(&self) -> Common {
                Common {
                    unit: self.unit,
                    poll: self.poll,
                    timeout: self.timeout,
                    retries: self.retries,
                    max_gap: self.max_gap,
                    max_registers_per_request: self.max_registers_per_request,
                    address_base: self.address_base,
                    backoff_max: self.backoff_max,
                    write_multiple: self.write_multiple,
                    points: self.points.clone(),
                }
            }
        }
    };
}

modbus_device_config! {
    /// `kind: modbus-tcp`.
    ModbusTcpConfig {
        /// `host:port`.
        address: String,
    }
}

modbus_device_config! {
    /// `kind: modbus-rtu`. Devices with the same `port` share one bus.
    ModbusRtuConfig {
        port: PathBuf,
        #[serde(default = "default_baud")]
        baud: u32,
        #[serde(default)]
        parity: Parity,
        #[serde(default = "default_stop_bits")]
        stop_bits: u8,
        #[serde(default = "default_data_bits")]
        data_bits: u8,
    }
}

/// Settings both Modbus kinds share (see `configs/modbus.yaml`).
#[derive(Debug, Clone)]
pub struct Common {
    /// Unit (slave) id.
    pub unit: u8,
    pub poll: Duration,
    /// How long one request may take before it counts as unanswered.
    pub timeout: Duration,
    /// Extra attempts of an unanswered request before the device is offline.
    pub retries: u32,
    /// Unused registers bridged when merging reads.
    pub max_gap: u16,
    pub max_registers_per_request: u16,
    /// 0: `address` is the protocol address; 1: the datasheet's 1-based number.
    pub address_base: u8,
    /// Longest wait between attempts to reach an offline device.
    pub backoff_max: Duration,
    /// Write with FC15/FC16 even for one coil or register (for devices
    /// without FC5/FC6).
    pub write_multiple: bool,
    pub points: Vec<PointConfig>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    10
}
fn default_max_registers() -> u16 {
    125
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}

impl Common {
    /// The 0-based protocol address of a point (valid after `validate`).
    pub fn protocol_address(&self, p: &PointConfig) -> u16 {
        let a = p.address.saturating_sub(u32::from(self.address_base));
        u16::try_from(a).unwrap_or(u16::MAX)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_gap: self.max_gap,
            max_registers: self.max_registers_per_request,
        }
    }

    /// The merged read requests of one poll cycle.
    pub fn plan(&self) -> Vec<ReadRequest> {
        plan::merge(&self.spans(), self.limits())
    }

    /// One request per point: what polling would cost without merging.
    pub fn unmerged_requests(&self) -> usize {
        self.points.len()
    }

    fn spans(&self) -> Vec<Span> {
        self.points
            .iter()
            .enumerate()
            .map(|(i, p)| Span {
                point: i,
                table: p.table,
                start: self.protocol_address(p),
                count: p.count(),
            })
            .collect()
    }

    fn validate(&self, path: &str, rtu: bool, report: &mut Report) {
        if self.poll.get().is_zero() {
            report.add(format!("{path}.poll"), "must be greater than 0");
        }
        if self.timeout.get().is_zero() {
            report.add(format!("{path}.timeout"), "must be greater than 0");
        }
        if rtu && !(1..=247).contains(&self.unit) {
            report.add(
                format!("{path}.unit"),
                format!("unit {} is not a valid RTU unit id (1 to 247)", self.unit),
            );
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
            if p.writable {
                report.add(
                    format!("{pp}.writable"),
                    "single bits of a register cannot be written (write the whole register as u16)",
                );
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

impl ModbusTcpConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        let ok = self.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            report.add(
                format!("{path}.address"),
                format!(
                    "{:?} is not host:port (e.g. 192.168.1.50:502)",
                    self.address
                ),
            );
        }
        self.common().validate(path, false, report);
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
    pub fn line(&self) -> (u32, Parity, u8, u8) {
        (self.baud, self.parity, self.data_bits, self.stop_bits)
    }
}
