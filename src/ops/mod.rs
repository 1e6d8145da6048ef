//! Operations: what an operator sees of the running gateway: status topics,
//! metrics and health over HTTP, systemd notification and watchdog.
//!
//! Must not poll devices or own pipeline state: it formats and exports what
//! other stages report.

pub mod http;
pub mod metrics;
pub mod notify;
pub mod status;
