//! The store's data types (what the broker core pushes and gets back) and
//! its error.
//!
//! Owns no state and no SQL. Must not depend on the writer or the readers.

use std::path::{Path, PathBuf};

/// A message as stored: for a session's queue or as a retained message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: u8,
    pub retain: bool,
    /// When it expires, Unix time in ms (MQTT 5 Message Expiry Interval).
    pub expires_ms: Option<u64>,
    /// Its MQTT 5 properties as the broker core encoded them; opaque here.
    pub props: Option<bytes::Bytes>,
    /// The subscription identifiers it is delivered with (queued rows).
    pub sub_ids: Vec<u32>,
}

impl StoredMessage {
    /// Bytes it holds: topic, payload, properties, identifiers.
    pub(super) fn footprint(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.props.as_ref().map_or(0, |p| p.len())
            + 4 * self.sub_ids.len()
    }

    /// A message without MQTT 5 extras.
    #[cfg(test)]
    pub fn plain(topic: String, payload: bytes::Bytes, qos: u8, retain: bool) -> StoredMessage {
        StoredMessage {
            topic,
            payload,
            qos,
            retain,
            expires_ms: None,
            props: None,
            sub_ids: Vec::new(),
        }
    }
}

/// A stored subscription: its filter, the options byte (see
/// `broker::subscription`) and its MQTT 5 Subscription Identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSub {
    pub filter: String,
    pub opts: u8,
    pub id: Option<u32>,
}

/// How long a persistent session outlives its connection, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionClock {
    /// The Session Expiry Interval in seconds; `None`: a row from before
    /// it was stored (the broker applies its cap).
    pub expiry_s: Option<u32>,
    /// When its last connection ended, Unix time in ms; `None` while a
    /// client was connected (or never was).
    pub gone_ms: Option<u64>,
}

/// Where an outgoing QoS 1/2 message of a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    Queued,
    Sent {
        pkid: u16,
    },
    /// PUBREC received, PUBREL owed.
    Released {
        pkid: u16,
    },
}

/// A row of a session's outgoing queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRow {
    pub seq: u64,
    pub msg: StoredMessage,
    pub state: OutState,
}

/// A persistent session as loaded at open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSession {
    pub client_id: String,
    /// In the order of the last `SaveSession`.
    pub subscriptions: Vec<StoredSub>,
    pub clock: SessionClock,
    /// Inbound QoS 2 packet ids not yet released, ascending.
    pub inbound_qos2: Vec<u16>,
    /// the first `preload` rows by seq (see open), the rest stays on disk
    pub messages: Vec<QueuedRow>,
    /// Rows and bytes (topic + payload) of the whole queue, on disk too.
    pub total_rows: u64,
    pub total_bytes: u64,
}

/// Everything [`Store::open`] loads.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Ordered by client id.
    pub sessions: Vec<StoredSession>,
    /// Ordered by topic; `retain` is always `true`.
    pub retained: Vec<StoredMessage>,
    /// Some(new name) when a broken file was set aside
    pub set_aside: Option<PathBuf>,
}

/// A change to apply; see [`Store::push`].
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Upsert: replaces the session's subscription set.
    SaveSession {
        client_id: String,
        subscriptions: Vec<StoredSub>,
    },
    /// Adds one subscription (or sets the options of an existing one with
    /// that filter), after the session's others.
    Subscribe {
        client_id: String,
        sub: StoredSub,
    },
    /// Sets a session's expiry and when its connection ended.
    SetClock {
        client_id: String,
        clock: SessionClock,
    },
    /// Removes one subscription.
    Unsubscribe {
        client_id: String,
        filter: String,
    },
    /// Removes the session, its subscriptions, messages and inbound ids.
    DeleteSession {
        client_id: String,
    },
    /// State Queued.
    AddMessage {
        client_id: String,
        seq: u64,
        msg: StoredMessage,
    },
    SetState {
        client_id: String,
        seq: u64,
        state: OutState,
    },
    RemoveMessage {
        client_id: String,
        seq: u64,
    },
    AddInbound {
        client_id: String,
        pkid: u16,
    },
    RemoveInbound {
        client_id: String,
        pkid: u16,
    },
    /// Upsert by topic.
    SetRetained {
        msg: StoredMessage,
    },
    ClearRetained {
        topic: String,
    },
}

impl StoreOp {
    /// Bytes this op holds while pending (for back-pressure).
    pub(super) fn size(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                StoreOp::SaveSession {
                    client_id,
                    subscriptions,
                } => {
                    client_id.len()
                        + subscriptions
                            .iter()
                            .map(|s| s.filter.len() + 16)
                            .sum::<usize>()
                }
                StoreOp::AddMessage { client_id, msg, .. } => client_id.len() + msg.footprint(),
                StoreOp::Subscribe { client_id, sub } => client_id.len() + sub.filter.len(),
                StoreOp::Unsubscribe { client_id, filter } => client_id.len() + filter.len(),
                StoreOp::DeleteSession { client_id }
                | StoreOp::SetClock { client_id, .. }
                | StoreOp::SetState { client_id, .. }
                | StoreOp::RemoveMessage { client_id, .. }
                | StoreOp::AddInbound { client_id, .. }
                | StoreOp::RemoveInbound { client_id, .. } => client_id.len(),
                StoreOp::SetRetained { msg } => msg.footprint(),
                StoreOp::ClearRetained { topic } => topic.len(),
            }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create broker store folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open broker store {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("broker store {path} has schema version {found}, this build knows {known}")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("broker store {path} is another format (table {table})")]
    WrongFormat { path: PathBuf, table: String },
    #[error("broker store {path}: bad {what} in {op}: {value}")]
    BadValue {
        path: PathBuf,
        op: &'static str,
        what: &'static str,
        value: i64,
    },
    #[error("cannot set aside broken broker store {path} as {to}: {source}")]
    SetAside {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("broker store {path}: {op} failed: {source}")]
    Query {
        path: PathBuf,
        op: &'static str,
        source: sqlx::Error,
    },
}

/// Maps a sqlx error of operation `op` on `path`.
pub(super) fn q(path: &Path, op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Query { path, op, source }
}
