//! The ports leaf: how ops reaches what other stages own without importing
//! them. The broker implements the traits, southbound builds the point
//! catalogue, the wiring (`lib.rs`) hands both to ops.
//!
//! - [`Watch`]: an in-process subscription on the embedded broker (Home
//!   Assistant's birth message);
//! - [`PasswordCheck`]: whether a user name and password are a login (the
//!   status page's HTTP basic auth, checked against `http.users` or the
//!   broker's users and password file);
//! - [`points`]: the configured devices and points as ops needs them;
//! - [`clients`]: the broker's connected clients ([`Clients`]).
//!
//! The broker's counters reach ops through the metrics leaf
//! (`metrics::BrokerFigures`, set by the broker's collector), like the
//! uplink's. Owns only these traits and value types: must import no stage,
//! start nothing and hold no state.

pub mod clients;
pub mod points;

pub use clients::{ClientInfo, Clients};

use tokio::sync::mpsc;

use crate::reading::Publish;

/// In-process subscriptions on the gateway's own broker (no TCP loopback).
/// Ops publishes through the gateway's publish channel, like the rules
/// stage, so this port only subscribes.
pub trait Watch: Send + Sync {
    /// A subscriber named `name`: messages matching `filters` arrive on the
    /// returned channel, bounded by `capacity` (when it is full, the
    /// broker's queue for this subscriber fills and the broker's drop
    /// policy applies). Invalid filters are skipped with a warning.
    fn watch(&self, name: &str, filters: &[String], capacity: usize) -> mpsc::Receiver<Publish>;
}

/// A password store: the status page asks it about every request.
pub trait PasswordCheck: Send + Sync {
    /// `true` when `user` is known and `password` is theirs. Must not log
    /// or keep the password.
    fn check(&self, user: &str, password: &[u8]) -> bool;

    /// [`PasswordCheck::check`] of a login from `peer`: a store may refuse
    /// an address that failed too often (`broker.login_failures`).
    fn check_from(&self, peer: std::net::IpAddr, user: &str, password: &[u8]) -> bool {
        let _ = peer;
        self.check(user, password)
    }
}
