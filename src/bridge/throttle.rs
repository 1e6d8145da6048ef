//! Small helpers of the bridge's tasks: a log throttle (one line per
//! interval, the rest counted) and a non-blocking poll of a future.
//!
//! Owns no state of the bridge. Must not log or count on its own.

use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the others.
pub(crate) struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub(crate) fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Polls `fut` once, without a waker: its output if it is ready now.
/// For futures that lose nothing when dropped while pending (a channel
/// send or receive), to try them without waiting.
pub(crate) fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    match fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
