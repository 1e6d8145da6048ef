//! STUB (replaced by the store branch).
#![allow(dead_code, unused_variables)]
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage { pub topic: String, pub payload: Bytes, pub qos: u8, pub retain: bool }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState { Queued, Sent { pkid: u16 }, Released { pkid: u16 } }
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRow { pub seq: u64, pub msg: StoredMessage, pub state: OutState }
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSession { pub client_id: String, pub subscriptions: Vec<(String, u8)>, pub inbound_qos2: Vec<u16>, pub messages: Vec<QueuedRow>, pub total_rows: u64, pub total_bytes: u64 }
#[derive(Debug, Default)]
pub struct Loaded { pub sessions: Vec<StoredSession>, pub retained: Vec<StoredMessage>, pub set_aside: Option<std::path::PathBuf> }
#[derive(Debug, Clone)]
pub enum StoreOp {
    SaveSession { client_id: String, subscriptions: Vec<(String, u8)> },
    DeleteSession { client_id: String },
    AddMessage { client_id: String, seq: u64, msg: StoredMessage },
    SetState { client_id: String, seq: u64, state: OutState },
    RemoveMessage { client_id: String, seq: u64 },
    AddInbound { client_id: String, pkid: u16 },
    RemoveInbound { client_id: String, pkid: u16 },
    SetRetained { msg: StoredMessage },
    ClearRetained { topic: String },
}
#[derive(Debug, thiserror::Error)]
pub enum StoreError { #[error("store: {0}")] Sql(String) }
#[derive(Clone, Debug)]
pub struct Store;
impl Store {
    pub const HIGH_WATER: usize = 16 << 20;
    pub async fn open(data_dir: &std::path::Path, preload: usize) -> Result<(Store, Loaded), StoreError> { Ok((Store, Loaded::default())) }
    pub fn push(&self, op: StoreOp) {}
    pub fn sync(&self) -> impl std::future::Future<Output = bool> + Send + 'static { async { true } }
    pub fn pending_bytes(&self) -> usize { 0 }
    pub async fn room(&self) {}
    pub async fn load_messages(&self, client_id: &str, after: u64, max_rows: usize, max_bytes: usize) -> Result<Vec<QueuedRow>, StoreError> { Ok(vec![]) }
    pub async fn close(&self, deadline: std::time::Duration) {}
    pub fn failed_commits(&self) -> u64 { 0 }
}
