//! The Modbus device kinds `modbus-tcp`, `modbus-rtu` and `modbus-rtu-tcp`
//! (docs/design.md; for users docs/modbus.md): their config structs and
//! checks, the register codec, read merging and the limits a device
//! teaches, the sources that poll them (one per TCP device, one per RTU
//! bus), `.../set` writes, their part of `fieldgate check`, and how they
//! plug into the `devices:` list (their `Kind`s).
//!
//! Owns everything Modbus. Must not publish readings itself (they go to the
//! rules stage through the `SourceContext`) nor touch the broker.

mod ascii;
mod bus;
mod config;
mod describe;
mod device;
mod kind;
mod learn;
mod link;
pub mod merge;
pub mod points;
mod rtu;
mod rtu_tcp;
mod tcp;
mod validate;
mod writes;

pub use config::{
    BitWrite, Common, Framing, ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig, Parity, buses,
};
pub(crate) use kind::{RTU_KIND, RTU_TCP_KIND, TCP_KIND};
pub use rtu::RtuBus;
pub use rtu_tcp::{RtuTcpBus, tcp_buses};
pub use tcp::TcpDevice;
pub(crate) use validate::{validate_buses, validate_tcp_buses};
