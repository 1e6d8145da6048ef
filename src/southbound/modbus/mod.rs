//! The Modbus device kinds `modbus-tcp`, `modbus-rtu` and `modbus-rtu-tcp`
//! (docs/design.md, README "Modbus"): their config structs and checks, and
//! the sources that poll them.
//!
//! Layout: `config.rs` (config structs), `validate.rs` (their checks),
//! `ascii.rs` (Modbus ASCII frames),
//! `points.rs` (register <-> value codec), `plan.rs` (read merging),
//! `link.rs` (one request with timeout over tokio-modbus), `device.rs` (the
//! per-device poll state machine: retries, busy devices, backoff, status),
//! `tcp.rs` (one source per TCP device), `bus.rs` (an RTU bus over any byte
//! stream), `rtu.rs` (one source per serial port), `rtu_tcp.rs` (one source
//! per serial-to-Ethernet converter), `writes.rs` (`.../set` commands, bit
//! writes, broadcasts), `describe.rs` (`fieldgate check` output).
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
