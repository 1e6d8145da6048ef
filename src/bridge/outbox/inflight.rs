//! The set of outbox rows in flight upstream, shared by the forwarder
//! (which adds what it sends) and the writer (which must not drop them).
//!
//! Owns only the set. Must not talk to the database or the network.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

/// Ids of the rows in flight upstream: handed to the upstream client and
/// not yet deleted. The forwarder adds a row when it sends it and takes it
/// out when the upstream client forgets it (a new session); the writer
/// takes it out when it deletes or dead-letters the row. `drop_oldest` and
/// the expiry pass leave these rows alone. At most `uplink.inflight` ids.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<BTreeSet<i64>>>);

impl InFlight {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeSet<i64>) -> R) -> R {
        // a panic while holding the lock cannot leave the set half-changed
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut set)
    }

    pub fn insert(&self, id: i64) {
        self.with(|s| s.insert(id));
    }

    pub fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        self.with(|s| {
            for id in ids {
                s.remove(&id);
            }
        });
    }

    pub fn snapshot(&self) -> Vec<i64> {
        self.with(|s| s.iter().copied().collect())
    }
}
