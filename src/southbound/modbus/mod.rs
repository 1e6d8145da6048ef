//! The Modbus device kinds `modbus-tcp` and `modbus-rtu` (docs/design.md, README "Modbus"):
//! their config structs and checks, and the sources that poll them.
//!
//! Layout: `config.rs` (config structs), `validate.rs` (their checks), `points.rs` (register
//! <-> value codec), `plan.rs` (read merging), `link.rs` (one request with
//! timeout over tokio-modbus), `device.rs` (the per-device poll state
//! machine: retries, backoff, status), `tcp.rs` (one source per TCP device),
//! `rtu.rs` (one source per serial bus), `writes.rs` (`.../set` commands),
//! `describe.rs` (`fieldgate check` output).
//!
//! Owns everything Modbus. Must not publish readings itself (they go to the
//! rules stage through the `SourceContext`) nor touch the broker.

mod bus;
mod config;
pub mod describe;
mod device;
mod link;
pub mod plan;
pub mod points;
mod rtu;
mod tcp;
mod validate;
mod writes;

pub use config::{Common, ModbusRtuConfig, ModbusTcpConfig, Parity, buses};
pub use rtu::{BusConfig, RtuBus};
pub use tcp::TcpDevice;
pub(crate) use validate::validate_buses;
