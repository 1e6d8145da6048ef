//! Integration tests: one binary, one module per area. They run the real
//! `fieldgate` binary and real peers on loopback (see docs/design.md).

mod arch;
mod arch_parse;
mod bridge;
mod broker;
mod check_writers;
mod config_errors;
mod docs;
mod docs_keys;
mod homeassistant;
mod homeassistant_uplink;
mod http_limits;
mod modbus;
mod ops;
mod page;
mod page_api;
mod page_live;
mod page_memory;
mod page_trends;
mod reading_clock;
mod rules;
mod rules_payload;
mod secret_files;
mod serial;
mod skeleton;
mod sparkplug;
mod support;
mod upstream;
mod writes_safety;
