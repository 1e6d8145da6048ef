//! Tests of the stage loop: scripts run off the async runtime, and the
//! stage drains every reading before it returns.

use std::time::Duration;

use tokio::sync::mpsc;

use super::tests::reading;
use super::*;
use crate::reading::Value;
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
    tokio::spawn(async move {
        run(
            &cfg.gateway.id,
            &cfg.rules,
            &cfg.source,
            &[],
            read_rx,
            out_tx,
        )
        .await
    })
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
    let (_d, p) = super::tests::script(
        "fn on_reading(r) {\n  publish(\"partial\", r.value);\n  if r.value == 0 { boom(); }\n  emit(r);\n}",
    );
    let mut engine = super::tests::engine_for(&[p]);
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
    std::thread::spawn(move || stage::worker(engine, work_rx, out_tx))
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
