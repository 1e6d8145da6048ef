//! Config of the Modbus kinds: `ModbusTcpConfig`, `ModbusRtuConfig`, the
//! settings they share, and the read requests they imply. The semantic checks
//! are in `validate.rs`.
//!
//! Owns the Modbus config keys and their defaults. Must not start anything.

use std::path::PathBuf;

use serde::Deserialize;

use super::merge::{self, Limits, ReadRequest, Span};
use super::points::PointConfig;
use super::rtu::BusConfig;
use crate::config::TimeSpan;
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
            pub poll: TimeSpan,
            #[serde(default = "default_timeout")]
            pub timeout: TimeSpan,
            #[serde(default = "default_retries")]
            pub retries: u32,
            #[serde(default = "default_max_gap")]
            pub max_gap: u16,
            #[serde(default = "default_max_registers")]
            pub max_registers_per_request: u16,
            #[serde(default)]
            pub address_base: u8,
            #[serde(default = "default_backoff_max")]
            pub backoff_max: TimeSpan,
            #[serde(default)]
            pub write_multiple: bool,
            #[serde(default)]
            pub bit_write: BitWrite,
            #[serde(default = "default_busy_delay")]
            pub busy_delay: TimeSpan,
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
                    bit_write: self.bit_write,
                    busy_delay: self.busy_delay,
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
        /// Close the connection after every poll (devices that serve one
        /// request per connection, or few clients at a time).
        #[serde(default)]
        close_after_poll: bool,
    }
}

modbus_device_config! {
    /// `kind: modbus-rtu-tcp`: RTU frames over TCP to a serial-to-Ethernet
    /// converter. Devices with the same `address` share one connection and
    /// one bus.
    ModbusRtuTcpConfig {
        /// `host:port` of the converter.
        address: String,
        #[serde(default)]
        framing: Framing,
        #[serde(default)]
        close_after_poll: bool,
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
        #[serde(default)]
        framing: Framing,
    }
}

/// `framing: rtu | ascii` of the serial framings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    #[default]
    Rtu,
    /// Modbus ASCII: `:`, hex digits, LRC, CR LF (`ascii.rs`).
    Ascii,
}

/// `bit_write: read_modify_write | mask`: how a writable `bit` point is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitWrite {
    /// FC3 read of the register, then FC6 (FC16 with `write_multiple`) of
    /// it with the bit changed. Another change of the register between the
    /// two requests is lost.
    #[default]
    ReadModifyWrite,
    /// FC22 mask write: the device changes the one bit itself, no window.
    Mask,
}

/// Settings all Modbus kinds share (see `configs/modbus.yaml`).
#[derive(Debug, Clone)]
pub struct Common {
    /// Unit (slave) id.
    pub unit: u8,
    pub poll: TimeSpan,
    /// How long one request may take before it counts as unanswered.
    pub timeout: TimeSpan,
    /// Extra attempts of an unanswered request before the device is offline.
    pub retries: u32,
    /// Unused registers bridged when merging reads.
    pub max_gap: u16,
    pub max_registers_per_request: u16,
    /// 0: `address` is the protocol address; 1: the datasheet's 1-based number.
    pub address_base: u8,
    /// Longest wait between attempts to reach an offline device.
    pub backoff_max: TimeSpan,
    /// Write with FC15/FC16 even for one coil or register (for devices
    /// without FC5/FC6).
    pub write_multiple: bool,
    pub bit_write: BitWrite,
    /// Wait before asking again a device that answered exception 06 (busy).
    pub busy_delay: TimeSpan,
    pub points: Vec<PointConfig>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> TimeSpan {
    TimeSpan::from_secs(1)
}
fn default_timeout() -> TimeSpan {
    TimeSpan::from_secs(1)
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
fn default_backoff_max() -> TimeSpan {
    TimeSpan::from_secs(60)
}
fn default_busy_delay() -> TimeSpan {
    TimeSpan::from_millis(100)
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
    pub fn read_requests(&self) -> Vec<ReadRequest> {
        merge::merge(&self.spans(), self.limits())
    }

    /// One request per point: what polling would cost without merging.
    pub fn unmerged_requests(&self) -> usize {
        self.points.len()
    }

    pub(super) fn spans(&self) -> Vec<Span> {
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
                framing: d.framing,
                devices: vec![(*d).clone()],
            }),
        }
    }
    out
}
