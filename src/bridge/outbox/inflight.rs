//! Which outbox rows the uplink has sent, shared by the forwarder and the
//! writer, so that a message is never both counted as dropped (or
//! expired) and delivered.
//!
//! - **Sent** rows (handed to the upstream client, not yet deleted) are
//!   never dropped by `drop_oldest` nor expired. The forwarder claims a
//!   row right before it sends it ([`InFlight::claim`]) and gives it back
//!   when the upstream client forgets it (a new session); the writer takes
//!   it out when it deletes or dead-letters the row.
//! - **Gone** rows: the writer reports each row it dropped or expired
//!   ([`InFlight::dropped`]). The forwarder may hold such a row already
//!   (read ahead before the delete was committed); its claim then fails and
//!   the row is not sent. A row sent between the writer's look at the sent
//!   rows and its commit (a few milliseconds) is not counted as dropped: it
//!   is on its way and will be acknowledged.
//! - Gone entries are forgotten once no read can bring their row back
//!   ([`InFlight::forget_gone`]): the row is not held read-ahead and every
//!   read that started before the drop has finished. At most the sent rows
//!   (`uplink.inflight`) plus the rows read ahead are kept.
//!
//! Owns only these sets. Must not talk to the database or the network.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
struct Inner {
    sent: BTreeSet<i64>,
    /// Dropped or expired rows, with the generation of their report.
    gone: BTreeMap<i64, u64>,
    /// Counts the writer's reports of dropped rows.
    generation: u64,
}

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<Inner>>);

impl InFlight {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // a panic while holding the lock cannot leave the sets half-changed
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner)
    }

    /// The forwarder is about to send `id`: `false` when the row was
    /// dropped or expired meanwhile (do not send it).
    pub fn claim(&self, id: i64) -> bool {
        self.with(|i| {
            if i.gone.remove(&id).is_some() {
                return false;
            }
            i.sent.insert(id);
            true
        })
    }

    /// These rows are no longer sent (deleted, dead-lettered, or forgotten
    /// by the upstream client).
    pub fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        self.with(|i| {
            for id in ids {
                i.sent.remove(&id);
            }
        });
    }

    /// The sent rows, for the writer's `NOT IN` list.
    pub fn snapshot(&self) -> Vec<i64> {
        self.with(|i| i.sent.iter().copied().collect())
    }

    /// The writer committed the deletion of `ids` by a drop policy or
    /// expiry. Returns how many of them were sent meanwhile (not dropped:
    /// they are on their way).
    pub fn dropped(&self, ids: &[i64]) -> u64 {
        self.with(|i| {
            i.generation += 1;
            let generation = i.generation;
            let mut sent = 0;
            for &id in ids {
                if i.sent.contains(&id) {
                    sent += 1;
                } else {
                    i.gone.insert(id, generation);
                }
            }
            sent
        })
    }

    /// The generation to note when a read of the outbox starts.
    pub fn generation(&self) -> u64 {
        self.with(|i| i.generation)
    }

    /// A read that started at `started` finished: gone entries reported
    /// before it started, whose row the forwarder does not hold
    /// (`held`), can never come back.
    pub fn forget_gone(&self, started: u64, held: impl Fn(i64) -> bool) {
        self.with(|i| i.gone.retain(|id, g| *g > started || held(*id)));
    }

    #[cfg(test)]
    pub fn gone_len(&self) -> usize {
        self.with(|i| i.gone.len())
    }
}
