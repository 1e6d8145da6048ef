//! What the forwarder hands the outbox writer during the drain: the
//! acknowledged rows to delete, the `released` marks of PUBREC'd QoS 2
//! rows, the failed tries. One pattern for all three: take the list,
//! hand it on if the writer has room now, keep it for a later turn if
//! not (the loop's `reserve` branches hand it on as soon as there is
//! room), drop it with a warning if the writer is gone.
//!
//! Owns that hand-off. Must not wait (the stop's last hand-off, which
//! may, is `mod.rs`'s).

use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::warn;

use super::Forwarder;
use super::window::State;
use crate::bridge::outbox::WriteCmd;
use crate::bridge::upstream::Upstream;

impl<C: Upstream> Forwarder<C> {
    /// Hands the acknowledged ids to the writer when its previous delete
    /// is done or a quarter of the window waits (group commit: one delete
    /// per commit, not one per turn), if it has room now; else the
    /// `reserve` branch of the loop does when it has.
    pub(super) fn send_acks(&mut self, st: &mut State) {
        let busy = st.acks_sent > st.acks_done;
        if busy && st.acks.len() < self.cfg.inflight as usize / 4 {
            return;
        }
        st.acks_sent += try_hand(
            &self.writer,
            &mut st.acks,
            WriteCmd::Ack,
            "uplink: outbox writer gone; acknowledged messages stay in the outbox",
        );
    }

    /// Hands the `released` marks of PUBREC'd rows to the writer (at
    /// once: a QoS 2 message holds its window slot until PUBCOMP).
    pub(super) fn send_marks(&mut self, st: &mut State) {
        st.marks_sent += try_hand(
            &self.writer,
            &mut st.marks,
            WriteCmd::Release,
            "uplink: outbox writer gone; QoS 2 messages wait for their PUBREL",
        );
    }

    /// Hands failed tries to the writer if it has room now (else later).
    pub(super) fn send_failures(&mut self, st: &mut State) {
        try_hand(
            &self.writer,
            &mut st.failures,
            WriteCmd::Failed,
            "uplink: outbox writer gone; failed tries not recorded",
        );
    }
}

/// Hands `items` (none: nothing) to the writer as one `cmd` if it has
/// room now; they stay for a later turn if it has not, and are dropped,
/// with `gone` in the log, if it is gone. How many were handed on.
fn try_hand<T>(
    writer: &mpsc::Sender<WriteCmd>,
    items: &mut Vec<T>,
    cmd: fn(Vec<T>) -> WriteCmd,
    gone: &str,
) -> u64 {
    if items.is_empty() {
        return 0;
    }
    match writer.try_reserve() {
        Ok(permit) => hand(permit, items, cmd),
        Err(TrySendError::Full(())) => 0,
        Err(TrySendError::Closed(())) => {
            items.clear();
            warn!("{gone}");
            0
        }
    }
}

/// Hands `items` to the writer as one `cmd` through a reserved `permit`;
/// how many.
pub(super) fn hand<T>(
    permit: mpsc::Permit<'_, WriteCmd>,
    items: &mut Vec<T>,
    cmd: fn(Vec<T>) -> WriteCmd,
) -> u64 {
    let n = items.len() as u64;
    permit.send(cmd(std::mem::take(items)));
    n
}
