//! Integration tests: one binary, one module per area. They run the real
//! `fieldgate` binary and real peers on loopback (see docs/design.md).

mod bridge;
mod bridge_crash;
mod bridge_large;
mod bridge_qos2;
mod broker;
mod config_errors;
mod modbus;
mod modbus_faults;
mod modbus_rtu;
mod modbus_rtu_tcp;
mod modbus_server;
mod modbus_wire;
mod modbus_writes;
mod ops;
mod rules;
mod serial;
mod skeleton;
mod support;
mod upstream;
