//! The broker's connected clients as the status page lists them: the
//! [`Clients`] port (the broker implements it) and its value type.
//!
//! Plain data and one trait: must not know how the broker keeps sessions.

/// One client connected to the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientInfo {
    pub client_id: String,
    /// The peer's address (`ip:port`).
    pub address: String,
    /// MQTT protocol level: 3 (3.1), 4 (3.1.1), 5 (5.0).
    pub protocol_level: u8,
    pub subscriptions: usize,
    /// Messages waiting for this client (in memory, on disk, in flight).
    pub queued: u64,
    /// When it connected, ms since the epoch.
    pub connected_since: i64,
    /// Messages not delivered to this session since it was made (full
    /// queue, spool quota).
    pub dropped: u64,
}

/// The clients connected now (in-process subscribers of the gateway
/// itself are not listed).
pub trait Clients: Send + Sync {
    fn clients(&self) -> Vec<ClientInfo>;
}
