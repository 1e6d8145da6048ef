//! The Modbus device kinds `modbus-tcp`, `modbus-rtu` and `modbus-rtu-tcp`
//! (docs/design.md; for users docs/modbus.md): their config structs and
//! checks, the register codec, read merging and the limits a device
//! teaches, the sources that poll them (one per TCP device, one per RTU
//! bus), `.../set` writes and their part of `fieldgate check`.
//!
//! Owns everything Modbus. Must not publish readings itself (they go to the
//! rules stage through the `SourceContext`) nor touch the broker.

mod ascii;
mod bus;
mod config;
pub mod describe;
mod device;
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
pub use rtu::{BusConfig, RtuBus};
pub use rtu_tcp::{RtuTcpBus, TcpBusConfig, tcp_buses};
pub use tcp::TcpDevice;
pub(crate) use validate::{validate_buses, validate_tcp_buses};
