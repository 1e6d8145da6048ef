//! What the writer's commits say about the disk: from the first failed
//! commit until one succeeds, `Counters::disk_problem` holds the reason
//! (the bridge's collector hands it to `/healthz`, which answers 503, and
//! to the STATUS line); one log line when it starts, one when it is over.
//!
//! Owns the wording of the problem. Must not write.

use tracing::{error, info};

use super::{Accounting, OutboxError};

/// SQLite's primary result code for a full disk (or a file at its size limit).
const SQLITE_FULL: i32 = 13;

impl Accounting {
    /// Records what a commit says about the disk: `Some(error)` a failing
    /// commit (shown in `/healthz` as 503, the STATUS line), `None` one
    /// that succeeded (the problem is over).
    pub(super) fn disk(&self, failed: Option<&OutboxError>) {
        let problem = failed.map(|e| {
            let full = matches!(e, OutboxError::Query { source: sqlx::Error::Database(db), .. }
                if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == SQLITE_FULL));
            if full {
                format!("disk full: the outbox cannot store messages ({e})")
            } else {
                format!("outbox disk failing: {e}")
            }
        });
        let mut now = self
            .counters
            .disk_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *now != problem {
            match &problem {
                Some(p) => error!(problem = %p, "outbox: the disk fails; /healthz answers 503"),
                None => info!("outbox: commits succeed again; the disk problem is over"),
            }
            *now = problem;
        }
    }
}
