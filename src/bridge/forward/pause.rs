//! The pause of outbox reads after a failed one (a broken file is not
//! read in a tight loop).
//!
//! Owns the pause's state. Must not read the outbox itself.

use std::time::Duration;

/// Reads of the outbox after a failed one: paused with a growing delay
/// (100 ms doubling to 5 s), so a broken file is not read in a tight loop.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReadPause {
    Clear,
    /// The last read failed: the next one waits until `until`.
    Until {
        until: tokio::time::Instant,
        last: Duration,
    },
    /// The pause is over; `last` is kept in case the next read fails too.
    Over {
        last: Duration,
    },
}

impl ReadPause {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(super) fn is_clear(&self) -> bool {
        !matches!(self, ReadPause::Until { .. })
    }

    pub(super) fn ok(&mut self) {
        *self = ReadPause::Clear;
    }

    /// A read failed: returns how long the next one waits.
    pub(super) fn failed(&mut self) -> Duration {
        let wait = match *self {
            ReadPause::Clear => Self::FIRST,
            ReadPause::Until { last, .. } | ReadPause::Over { last } => (last * 2).min(Self::MAX),
        };
        *self = ReadPause::Until {
            until: tokio::time::Instant::now() + wait,
            last: wait,
        };
        wait
    }

    /// Until the pause is over (for ever when there is none).
    pub(super) async fn wait(&mut self) {
        match *self {
            ReadPause::Until { until, last } => {
                tokio::time::sleep_until(until).await;
                *self = ReadPause::Over { last };
            }
            _ => std::future::pending().await,
        }
    }
}
