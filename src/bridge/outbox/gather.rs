//! The commit window (`buffer.commit_window`): what one commit gathers
//! and what ends a window early (see the guarantees in `mod.rs`).
//!
//! Owns [`Writer::gather`] and its bookkeeping. Must not write.

use tokio::sync::mpsc;

use super::{Commit, MAX_BATCH, WriteCmd, Writer};

impl Writer {
    /// Gathers one commit's commands: whatever queued, then what comes
    /// within `commit_window` of `first`, unless someone waits
    /// ([`Commit::Now`]), the batch is full, or enough acknowledgements and
    /// release marks wait to hold the uplink's window back ([`Writer::flush_at`]).
    pub(super) async fn gather(
        &self,
        first: WriteCmd,
        rx: &mut mpsc::Receiver<WriteCmd>,
        batch: &mut Vec<WriteCmd>,
    ) {
        let deadline = tokio::time::Instant::now() + self.acct.cfg.commit_window.get();
        let mut load = Load::default();
        load.add(&first);
        batch.push(first);
        loop {
            while load.rows < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => {
                        load.add(&cmd);
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            // a drain (marks only) commits every `flush_at` marks; beside
            // inserts the marks wait for the window up to twice that
            let marks_at = if load.rows == 0 {
                self.flush_at
            } else {
                self.flush_at * 2
            };
            if load.now || load.rows >= MAX_BATCH || load.marks >= marks_at {
                return;
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        load.add(&cmd);
                        batch.push(cmd);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Acknowledgements and release marks that end a commit window early
    /// (twice as many beside inserts; the bridge sets a quarter of the
    /// uplink's in-flight window: a drain is not held back by the window).
    pub fn with_flush_at(mut self, marks: usize) -> Writer {
        self.flush_at = marks.max(1);
        self
    }
}

/// What a gathering batch holds (see [`Writer::gather`]).
#[derive(Default)]
struct Load {
    rows: usize,
    marks: usize,
    now: bool,
}

impl Load {
    fn add(&mut self, cmd: &WriteCmd) {
        match cmd {
            WriteCmd::Insert { msgs, commit, .. } => {
                self.rows += msgs.len();
                self.now |= *commit == Commit::Now;
            }
            WriteCmd::Ack(ids) => self.marks += ids.len(),
            WriteCmd::Release(ids) => self.marks += ids.len(),
            WriteCmd::Failed(_) => {}
        }
    }
}
