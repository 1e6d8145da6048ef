//! The rules stage's worker: a blocking thread (tokio's blocking pool) that
//! owns the [`RulesEngine`], so a heavy script never stalls the async
//! runtime. It takes batches of readings and reload requests from the async
//! side (`run` in `mod.rs`), sends publishes on with back-pressure, and logs
//! script errors. With `payload: per_device` it also wakes at the deadline
//! of a device group still waiting for points (`grouping.rs`), and
//! publishes the groups left when the stage ends.
//!
//! Error log policy: every failure is counted (per script, see
//! [`ScriptCounters`](super::ScriptCounters)); the log gets at most
//! [`LOG_BURST`] lines per script per [`LOG_WINDOW`], then one line saying
//! how many were not logged. A panic while processing a reading (a bug, not
//! a script error) drops that reading, is logged, and the stage goes on.
//! Must not touch signals or the readings channel.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::engine::{Failure, RulesEngine};
use crate::metrics::LogThrottle;
use crate::reading::{Publish, Reading};

/// Log lines per script per window before errors are only counted.
pub const LOG_BURST: u32 = 5;
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What the async side hands the worker.
pub(super) enum Work {
    /// Batches from the readings channel, in the order received.
    Batch(Vec<Vec<Reading>>),
    Reload,
}

/// Logs failures within the per-script budget.
struct ErrorLog {
    per_script: Vec<LogThrottle>,
}

impl ErrorLog {
    fn report(&mut self, index: usize, f: &Failure, r: &Reading) {
        let Some(not_logged) = self.per_script[index].ready() else {
            return;
        };
        if not_logged > 0 {
            warn!(
                script = %f.script,
                not_logged,
                errors_total = f.errors_total,
                "rule script errors not logged in the last {LOG_WINDOW:?}"
            );
        }
        warn!(
            script = %f.script,
            line = f.error.at().and_then(|a| a.line),
            column = f.error.at().and_then(|a| a.column),
            device = %r.device,
            point = %r.point,
            errors_total = f.errors_total,
            "rule script error: {}; reading {}/{}={} ({})",
            f.error,
            r.device,
            r.point,
            r.value,
            r.quality.as_str()
        );
    }
}

/// Sends `pubs` on in order, back to back: the publisher wakes once for
/// many, not once per publish. `false` when `out` closed.
fn send_all(out: &mpsc::Sender<Publish>, pubs: &mut Vec<Publish>) -> bool {
    for p in pubs.drain(..) {
        if out.blocking_send(p).is_err() {
            debug!("publish channel closed; rules stage stops");
            return false;
        }
    }
    true
}

/// The next work, or `None` once the async side closed `work`. While a
/// device group waits for points, waits only until its deadline and
/// publishes the groups due then. Timers need the runtime's handle: a
/// worker started off the runtime waits for work only.
fn next_work(
    engine: &mut RulesEngine,
    work: &mut mpsc::Receiver<Work>,
    out: &mpsc::Sender<Publish>,
    pubs: &mut Vec<Publish>,
) -> Option<Work> {
    let handle = tokio::runtime::Handle::try_current().ok();
    loop {
        let (Some(due), Some(h)) = (engine.next_flush(), &handle) else {
            return work.blocking_recv();
        };
        let due = tokio::time::Instant::from_std(due);
        match h.block_on(tokio::time::timeout_at(due, work.recv())) {
            Ok(w) => return w,
            Err(_) => {
                engine.flush_due(std::time::Instant::now(), pubs);
                if !send_all(out, pubs) {
                    return None;
                }
            }
        }
    }
}

/// Processes work until the async side closes `work`; returns when every
/// reading handed over was processed, or when `out` closed.
pub(super) fn worker(
    mut engine: RulesEngine,
    mut work: mpsc::Receiver<Work>,
    out: mpsc::Sender<Publish>,
) {
    let mut log = ErrorLog {
        per_script: engine
            .counters()
            .iter()
            .map(|_| LogThrottle::with_burst(LOG_WINDOW, LOG_BURST))
            .collect(),
    };
    let mut pubs = Vec::new();
    while let Some(w) = next_work(&mut engine, &mut work, &out, &mut pubs) {
        match w {
            Work::Batch(batches) => {
                for r in batches.iter().flatten() {
                    let before = pubs.len();
                    // Rhai should never panic; if it does, lose this reading,
                    // not the stage (a dead stage would stop every source).
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        engine.process(r, &mut pubs)
                    }));
                    match run {
                        Ok(failures) => {
                            for f in failures {
                                log.report(f.index, &f, r);
                            }
                        }
                        Err(_) => {
                            error!(
                                device = %r.device,
                                point = %r.point,
                                "rules engine panicked on a reading; the reading is dropped"
                            );
                            engine.discard_pending();
                            pubs.truncate(before);
                        }
                    }
                }
                // groups that waited past their deadline while other
                // devices' batches kept the worker busy
                if engine
                    .next_flush()
                    .is_some_and(|d| d <= std::time::Instant::now())
                {
                    engine.flush_due(std::time::Instant::now(), &mut pubs);
                }
                if !send_all(&out, &mut pubs) {
                    break;
                }
            }
            Work::Reload => engine.reload_and_log(),
        }
    }
    // the polls under way when the sources stopped
    engine.flush_all(&mut pubs);
    send_all(&out, &mut pubs);
    for (name, c) in engine.counters() {
        use std::sync::atomic::Ordering::Relaxed;
        info!(
            script = %name,
            calls = c.calls.load(Relaxed),
            errors = c.errors.load(Relaxed),
            limit_exceeded = c.limit_exceeded.load(Relaxed),
            reloads = c.reloads.load(Relaxed),
            reload_failures = c.reload_failures.load(Relaxed),
            "rule script totals"
        );
    }
}
