//! Operations: what an operator sees of the running gateway. Status topics
//! now; metrics, health and systemd notification join here.
//!
//! Owns the status topic names and payloads. Must not poll devices or own
//! pipeline state: it only formats what other stages report.

pub mod status;
