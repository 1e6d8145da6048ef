//! A non-blocking poll of a future, for the bridge's requests that must
//! be tried at once (log lines are throttled by `metrics::LogThrottle`).
//!
//! Owns no state of the bridge. Must not log or count on its own.

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
