//! The rules stage's worker: with scripts, a blocking thread (tokio's
//! blocking pool) that owns the [`RulesEngine`], so a heavy script never
//! stalls the async runtime. It takes batches of readings and reload
//! requests from the async side (`run` in `mod.rs`), sends publishes on
//! with back-pressure, and logs script errors. Without scripts the default
//! mapping (no script, nothing that can block) runs on the stage's own
//! task instead ([`mapping_only`]): no thread to wake per batch. With
//! `payload: per_device` either wakes at the deadline of a device group
//! still waiting for points (`grouping.rs`), and publishes the groups left
//! when the stage ends. Each batch, once mapped, goes on to the Sparkplug
//! node when there is one ([`Onward`]).
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
use crate::log_throttle::LogThrottle;
use crate::reading::batch::ReadingsReceiver;
use crate::reading::{Publish, Reading};

/// Log lines per script per window before errors are only counted.
pub const LOG_BURST: u32 = 5;
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Where each batch goes once the stage has mapped it: the Sparkplug
/// node's queue, when `sparkplug:` is on (the node reads the same readings
/// without a copy of each batch).
///
/// Policy: never drops. A full queue makes the stage wait (and the sources
/// with it: back-pressure, as a slow rules stage causes); once the
/// receiver is gone (the node ended) batches are let go.
pub struct Onward(Option<mpsc::Sender<Vec<Reading>>>);

impl Onward {
    /// Nothing after the stage.
    pub fn nowhere() -> Self {
        Onward(None)
    }

    /// Each batch to `tx` once mapped.
    pub fn to(tx: mpsc::Sender<Vec<Reading>>) -> Self {
        Onward(Some(tx))
    }

    async fn hand(&mut self, batch: Vec<Reading>) {
        if let Some(tx) = &self.0
            && tx.send(batch).await.is_err()
        {
            self.0 = None;
        }
    }

    /// [`Onward::hand`] from the worker's thread.
    fn hand_blocking(&mut self, batch: Vec<Reading>) {
        if let Some(tx) = &self.0
            && tx.blocking_send(batch).is_err()
        {
            self.0 = None;
        }
    }
}

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

/// [`process`] of a batch with no scripts to run: in one call for the
/// whole batch ([`RulesEngine::process_unscripted`]); should that panic,
/// the batch is lost, not the stage. With scripts (loaded by a SIGHUP
/// since), reading by reading.
fn process_unscripted(
    engine: &mut RulesEngine,
    log: &mut ErrorLog,
    batch: &[Reading],
    pubs: &mut Vec<Publish>,
) {
    let before = pubs.len();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.process_unscripted(batch, &mut *pubs)
    }));
    match run {
        Ok(true) => flush_overdue(engine, pubs),
        Ok(false) => process(engine, log, batch.iter(), pubs),
        Err(_) => {
            error!(
                readings = batch.len(),
                "rules engine panicked on a batch; its readings are dropped"
            );
            engine.discard_pending();
            pubs.truncate(before);
        }
    }
}

/// Runs the engine on each reading of `batch` in order, appending the
/// publishes to `pubs`, then publishes the groups due (see
/// [`RulesEngine::flush_due`]).
fn process<'a>(
    engine: &mut RulesEngine,
    log: &mut ErrorLog,
    batch: impl Iterator<Item = &'a Reading>,
    pubs: &mut Vec<Publish>,
) {
    for r in batch {
        let before = pubs.len();
        // Rhai should never panic; if it does, lose this reading,
        // not the stage (a dead stage would stop every source).
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.process(r, &mut *pubs)
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
    flush_overdue(engine, pubs);
}

/// Publishes the groups that waited past their deadline while other
/// devices' batches kept the worker busy.
fn flush_overdue(engine: &mut RulesEngine, pubs: &mut Vec<Publish>) {
    if engine
        .next_flush()
        .is_some_and(|d| d <= std::time::Instant::now())
    {
        engine.flush_due(std::time::Instant::now(), pubs);
    }
}

/// The default mapping without scripts, on the stage's task: takes each
/// batch from `readings`, sends its publishes on with back-pressure, wakes
/// at a device group's deadline, and publishes the groups left once every
/// sender of `readings` is gone. Returns then, or when `out` closed.
pub(super) async fn mapping_only(
    mut engine: RulesEngine,
    readings: &mut ReadingsReceiver,
    out: &mpsc::Sender<Publish>,
    onward: &mut Onward,
    hup: &mut Option<tokio::signal::unix::Signal>,
) {
    let mut log = ErrorLog {
        per_script: Vec::new(),
    };
    let mut pubs = Vec::new();
    loop {
        let due = engine.next_flush().map(tokio::time::Instant::from_std);
        tokio::select! {
            batch = readings.recv() => {
                let Some(batch) = batch else { break };
                process_unscripted(&mut engine, &mut log, &batch, &mut pubs);
                onward.hand(batch).await;
            }
            () = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                engine.flush_due(std::time::Instant::now(), &mut pubs);
            }
            () = super::reload::next_hangup(hup) => {
                info!("SIGHUP: reloading rule scripts");
                engine.reload_and_log();
            }
        }
        if !send_all_async(out, &mut pubs).await {
            return;
        }
    }
    // the polls under way when the sources stopped
    engine.flush_all(&mut pubs);
    send_all_async(out, &mut pubs).await;
}

/// [`send_all`] on the runtime.
async fn send_all_async(out: &mpsc::Sender<Publish>, pubs: &mut Vec<Publish>) -> bool {
    for p in pubs.drain(..) {
        if out.send(p).await.is_err() {
            debug!("publish channel closed; rules stage stops");
            return false;
        }
    }
    true
}

/// Processes work until the async side closes `work`; returns when every
/// reading handed over was processed, or when `out` closed.
pub(super) fn worker(
    mut engine: RulesEngine,
    mut work: mpsc::Receiver<Work>,
    out: mpsc::Sender<Publish>,
    mut onward: Onward,
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
                process(&mut engine, &mut log, batches.iter().flatten(), &mut pubs);
                if !send_all(&out, &mut pubs) {
                    break;
                }
                for b in batches {
                    onward.hand_blocking(b);
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

#[cfg(test)]
mod tests {
    //! Tests of the stage loop: scripts run off the async runtime, and the
    //! stage drains every reading before it returns.

    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::reading::Value;
    use crate::rules::tests::reading;
    use crate::rules::*;
    use crate::settings::Config;

    fn config(script: &str, max_operations: u64) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.rhai"), script).expect("write script");
        let yaml = format!(
            "gateway:\n  id: gw\nrules:\n  scripts: [s.rhai]\n  limits:\n    max_operations: {max_operations}\n"
        );
        let path = dir.path().join("fieldgate.yaml");
        let cfg = crate::settings::parse(&yaml, &path).expect("valid config");
        (dir, cfg)
    }

    /// The stage on `cfg` with no configured devices, on its own task.
    fn spawn_stage(
        cfg: Config,
        read_rx: crate::reading::batch::ReadingsReceiver,
        out_tx: mpsc::Sender<Publish>,
    ) -> tokio::task::JoinHandle<()> {
        spawn_stage_onward(cfg, read_rx, out_tx, Onward::nowhere())
    }

    fn spawn_stage_onward(
        cfg: Config,
        read_rx: crate::reading::batch::ReadingsReceiver,
        out_tx: mpsc::Sender<Publish>,
        onward: Onward,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            run(
                &cfg.gateway.id,
                &cfg.rules,
                &cfg.source,
                &[],
                read_rx,
                out_tx,
                onward,
            )
            .await
        })
    }

    /// Every batch reaches `onward` whole and in order, after its
    /// publishes, with scripts (the worker thread) and without (the
    /// stage's task); a full onward queue makes the stage wait, not drop.
    #[tokio::test]
    async fn every_batch_goes_onward_in_order_once_mapped() {
        let no_scripts = {
            let path = std::path::Path::new("/nonexistent/fieldgate.yaml");
            crate::settings::parse("gateway:\n  id: gw\n", path).expect("valid config")
        };
        let (_dir, scripted) = config("fn on_reading(r) { emit(r); }", 1_000_000);
        for cfg in [no_scripts, scripted] {
            let (read_tx, read_rx) = crate::reading::batch::channel(1000);
            let (out_tx, mut out_rx) = mpsc::channel(1000);
            // room for 2 batches: the rest wait for the receiver
            let (on_tx, mut on_rx) = mpsc::channel(2);
            let stage = spawn_stage_onward(cfg, read_rx, out_tx, Onward::to(on_tx));
            let batches: Vec<Vec<Reading>> = (0..20)
                .map(|b| {
                    (0..3)
                        .map(|i| reading("d", &format!("p{i}"), Value::Int(b), b))
                        .collect()
                })
                .collect();
            for b in &batches {
                read_tx.send(b.clone()).await.expect("send");
            }
            drop(read_tx);
            let mut got = Vec::new();
            while let Some(b) = on_rx.recv().await {
                got.push(b);
            }
            assert_eq!(got, batches);
            stage.await.expect("stage ends");
            let mut published = 0;
            while out_rx.try_recv().is_ok() {
                published += 1;
            }
            assert_eq!(published, 60, "every reading was mapped as well");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_script_does_not_stall_the_runtime() {
        // Busy for a second of wall time per reading (well within the limit).
        let script = "fn on_reading(r) {\n  let end_at = now() + 1000;\n  while now() < end_at { }\n  emit(r);\n}";
        let (_dir, cfg) = config(script, u64::MAX / 2);
        let (read_tx, read_rx) = crate::reading::batch::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let stage = spawn_stage(cfg, read_rx, out_tx);
        read_tx
            .send(vec![reading("d", "p", Value::Int(1), 1)])
            .await
            .expect("send");
        // On a single-threaded runtime this timer could not fire while the
        // script runs if the script ran on the runtime's thread.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            matches!(out_rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
            "the timer fired while the script was still busy"
        );
        let p = tokio::time::timeout(Duration::from_secs(30), out_rx.recv())
            .await
            .expect("the script finishes")
            .expect("a publish");
        assert_eq!(p.topic, "gw/d/p");
        drop(read_tx);
        stage.await.expect("stage ends");
    }

    #[tokio::test]
    async fn the_stage_drains_every_reading_then_returns() {
        let (_dir, cfg) = config(
            "fn on_reading(r) {\n  if r.value % 2 == 0 { emit(r); }\n}",
            100_000,
        );
        let (read_tx, read_rx) = crate::reading::batch::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let stage = spawn_stage(cfg, read_rx, out_tx);
        let collect = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(p) = out_rx.recv().await {
                got.push(p);
            }
            got
        });
        for i in 0..1000 {
            read_tx
                .send(vec![reading("d", "p", Value::Int(i), i)])
                .await
                .expect("send");
        }
        drop(read_tx);
        stage.await.expect("stage ends");
        // the publish channel closes once the stage is done
        let got = collect.await.expect("collector");
        assert_eq!(got.len(), 500);
        let ts: Vec<i64> = got
            .iter()
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&p.payload).expect("json")["ts"]
                    .as_i64()
                    .expect("ts")
            })
            .collect();
        assert!(
            ts.windows(2).all(|w| w[1] == w[0] + 2),
            "in order, none lost"
        );
    }

    #[test]
    fn a_panic_in_the_engine_drops_one_reading_not_the_stage() {
        let (_d, p) = crate::rules::tests::script(
            "fn on_reading(r) {\n  publish(\"partial\", r.value);\n  if r.value == 0 { boom(); }\n  emit(r);\n}",
        );
        let mut engine = crate::rules::tests::engine_for(&[p]);
        // A native function that panics stands in for a bug in Rhai or our API.
        engine
            .engine
            .register_fn("boom", || -> bool { panic!("simulated bug") });
        let (work_tx, work_rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let batch = vec![
            reading("d", "p", Value::Int(0), 1),
            reading("d", "p", Value::Int(1), 2),
        ];
        work_tx
            .try_send(stage::Work::Batch(vec![batch]))
            .expect("room for one batch");
        drop(work_tx);
        std::thread::spawn(move || stage::worker(engine, work_rx, out_tx, Onward::nowhere()))
            .join()
            .expect("the worker survives the panic");
        let mut got = Vec::new();
        while let Ok(p) = out_rx.try_recv() {
            got.push((p.topic, p.payload.to_vec()));
        }
        // only the second reading's publishes: the first one's partial publish is gone
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], ("partial".to_string(), b"1".to_vec()));
        assert_eq!(got[1].0, "gw/d/p");
    }
}
