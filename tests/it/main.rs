//! Integration tests: one binary, one module per area. They run the real
//! `fieldgate` binary and real peers on loopback (see DESIGN.md §7).

mod bridge;
mod bridge_qos2;
mod config_errors;
mod skeleton;
mod support;
mod upstream;
