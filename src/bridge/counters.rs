//! What the bridge counted since start: the one thing its stages share
//! (the doors into the outbox, write-behind, the outbox, the forwarder,
//! the metrics collector), so none of them imports it from `mod.rs`.
//!
//! Owns the counters. Must not import any other part of the bridge.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// What the bridge counted since start (for logs and metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub committed: AtomicU64,
    pub dropped_oldest: AtomicU64,
    pub dropped_newest: AtomicU64,
    pub expired: AtomicU64,
    /// Rows past their MQTT 5 `message_expiry` when their turn came: dropped unsent.
    pub message_expired: AtomicU64,
    pub io_errors: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub live_dropped: AtomicU64,
    pub commands_dropped: AtomicU64,
    /// Messages moved to the dead-letter table (given up on).
    pub dead: AtomicU64,
    pub from_local_clients: AtomicU64,
    /// Gauges: rows and bytes in the outbox.
    pub depth: AtomicU64,
    pub depth_bytes: AtomicU64,
    /// 1 while the upstream connection is up.
    pub connected: AtomicU64,
    /// Commit time (ms since the epoch) of the oldest outbox row; 0 when empty.
    pub oldest_ms: AtomicI64,
    /// Dead letters removed past the table's bound or age (`outbox/maintain.rs`).
    pub dead_pruned: AtomicU64,
    /// What is wrong with the outbox's disk now (a failing commit), for
    /// `/healthz` (503), the STATUS line and the log; cleared by the next
    /// commit that succeeds.
    pub disk_problem: Mutex<Option<String>>,
}
