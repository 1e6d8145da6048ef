//! Operations: what an operator sees of the running gateway: status topics,
//! metrics and health over HTTP, systemd notification and watchdog.
//!
//! Must not poll devices or own pipeline state: it formats and exports what
//! other stages report, reading figures only through the `crate::metrics`
//! leaf (it imports no stage).

pub mod http;
pub mod notify;
pub mod status;
