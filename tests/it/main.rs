//! Integration tests: one binary, one module per area. They run the real
//! `fieldgate` binary and real peers on loopback (see docs/design.md).

mod arch;
mod arch_parse;
mod bridge;
mod bridge_ack;
mod bridge_clock;
mod bridge_commands;
mod bridge_crash;
mod bridge_large;
mod bridge_link;
mod bridge_outbox_file;
mod bridge_poison;
mod bridge_policies;
mod bridge_qos2;
mod bridge_stop;
mod broker;
mod config_errors;
mod homeassistant;
mod homeassistant_uplink;
mod modbus;
mod modbus_faults;
mod modbus_learn;
mod modbus_rtu;
mod modbus_rtu_tcp;
mod modbus_server;
mod modbus_wire;
mod modbus_writes;
mod ops;
mod page;
mod page_live;
mod reading_clock;
mod rules;
mod serial;
mod skeleton;
mod support;
mod upstream;
