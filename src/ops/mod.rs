//! Operations: what an operator sees of the running gateway: metrics and
//! health over HTTP, the status page and its JSON API (with the
//! points' and the uplink's history and the broker's clients), Home
//! Assistant discovery, systemd notification and watchdog.
//!
//! The status topics (`{gateway}/status`, `{gateway}/status/{device}`)
//! are not ops': their names and payloads are the `reading::status` leaf's.
//!
//! Must not poll devices or own pipeline state: it formats and exports what
//! other stages report, reading figures only through the `crate::metrics`
//! leaf, and reaching the broker and the point catalogue only through the
//! `crate::ports` leaf (traits the broker implements, value types
//! southbound fills, handed in by the wiring). It imports no stage; the
//! module graph check (`tests/it/arch.rs`) fails on an edge from ops to
//! another stage.

pub mod api;
pub mod history;
pub mod homeassistant;
pub mod http;
pub mod listen;
pub mod logring;
pub mod notify;
pub mod page;
pub mod trend;
