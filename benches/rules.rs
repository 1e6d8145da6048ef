//! Rules throughput: readings per second and µs per reading through a
//! 10-line Rhai script with a deadband and a topic rewrite, on one core.
//!
//!     cargo bench --bench rules
//!
//! Measures, in one run: the default mapping (no script) as the baseline,
//! the script through `RulesEngine::process` (one core, no channels), and
//! the whole stage (`rules::run`: channels, batching, the blocking worker).
//! There is no mosquitto equivalent of a rules engine, so ratios are given
//! against the default mapping measured in the same run. Target: 100,000
//! readings/s on one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldgate::reading::{Publish, Quality, Reading, Value};
use fieldgate::rules::{RulesConfig, RulesEngine};

/// The benchmarked script: 10 lines.
const SCRIPT: &str = r#"// benchmark rule: drop bad readings, deadband, plant-wide topics
fn on_reading(r) {
    if r.quality != "good" {
        return;
    }
    if deadband(r, 0.5) {
        r.topic = `site/${r.device}/${r.point}`;
        emit(r);
    }
}
"#;

const DEVICES: usize = 20;
const POINTS: usize = 10;
const READINGS: usize = 300_000;

/// A random walk per point: about half the readings pass the deadband.
fn readings(n: usize) -> Vec<Reading> {
    let names: Vec<(Arc<str>, Vec<Arc<str>>)> = (0..DEVICES)
        .map(|d| {
            (
                format!("dev{d}").into(),
                (0..POINTS).map(|p| format!("point{p}").into()).collect(),
            )
        })
        .collect();
    let mut level = vec![50.0_f64; DEVICES * POINTS];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let k = i % (DEVICES * POINTS);
            #[allow(clippy::cast_precision_loss)]
            let step = ((seed % 1000) as f64 / 1000.0 - 0.5) * 1.6;
            level[k] += step;
            let (dev, points) = &names[k / POINTS];
            Reading {
                device: dev.clone(),
                point: points[k % POINTS].clone(),
                value: Value::Float(level[k]),
                unit: Some("°C".into()),
                ts: 1_763_773_200_000 + i as i64,
                quality: if i % 100 == 99 {
                    Quality::Bad
                } else {
                    Quality::Good
                },
            }
        })
        .collect()
}

fn engine(paths: Vec<std::path::PathBuf>) -> RulesEngine {
    let (e, errors) = RulesEngine::new("gw", &RulesConfig::default(), paths);
    assert!(errors.is_empty(), "{errors:?}");
    e
}

/// Runs every reading through `e`; returns (elapsed, publishes).
fn drive(e: &mut RulesEngine, input: &[Reading]) -> (Duration, usize) {
    let mut out: Vec<Publish> = Vec::with_capacity(4);
    let mut published = 0;
    let start = Instant::now();
    for r in input {
        let failures = e.process(r, &mut out);
        assert!(failures.is_empty(), "{failures:?}");
        published += out.len();
        out.clear();
    }
    (start.elapsed(), published)
}

/// The whole stage: readings in through a channel, publishes out.
fn stage(dir: &std::path::Path, input: Vec<Reading>) -> Duration {
    let yaml = "gateway:\n  id: gw\nrules:\n  scripts: [bench.rhai]\n";
    let cfg = fieldgate::settings::parse(yaml, &dir.join("fieldgate.yaml")).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (read_tx, read_rx) = fieldgate::reading::batch::channel(fieldgate::READINGS_CAPACITY);
        let (pub_tx, mut pub_rx) = tokio::sync::mpsc::channel(fieldgate::PUBLISH_CAPACITY);
        let start = Instant::now();
        let stage = tokio::spawn(async move {
            fieldgate::rules::run(
                &cfg.gateway.id,
                &cfg.rules,
                &cfg.source,
                &[],
                read_rx,
                pub_tx,
                fieldgate::rules::Onward::nowhere(),
            )
            .await
        });
        let sink = tokio::spawn(async move {
            let mut n = 0usize;
            while pub_rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        for r in input {
            read_tx.send(vec![r]).await.expect("stage alive");
        }
        drop(read_tx);
        stage.await.expect("stage");
        let n = sink.await.expect("sink");
        assert!(n > 0);
        start.elapsed()
    })
}

fn report(what: &str, n: usize, d: Duration, baseline: Option<f64>) -> f64 {
    let secs = d.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    #[allow(clippy::cast_precision_loss)]
    let us = secs * 1e6 / n as f64;
    let ratio = baseline.map_or(String::new(), |b| {
        format!("  ({:.2}× the default mapping's time)", b / rate)
    });
    println!("{what:<44} {rate:>12.0} readings/s {us:>8.2} µs/reading{ratio}");
    rate
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("bench.rhai");
    std::fs::write(&script, SCRIPT).expect("write script");
    let input = readings(READINGS);
    println!(
        "rules benchmark: {READINGS} readings over {} points, script of {} lines (deadband 0.5 + topic rewrite)",
        DEVICES * POINTS,
        SCRIPT.lines().count()
    );

    // warm-up, then best of 3 for each
    let mut base = engine(Vec::new());
    let mut scripted = engine(vec![script.clone()]);
    drive(&mut base, &input[..20_000]);
    drive(&mut scripted, &input[..20_000]);
    let best = |e: &mut RulesEngine| {
        (0..3)
            .map(|_| drive(e, &input))
            .min_by_key(|(d, _)| *d)
            .expect("3 runs")
    };
    let (d_base, _) = best(&mut base);
    let mut fresh = engine(vec![script.clone()]);
    let (_, published) = drive(&mut fresh, &input);
    let (d_script, _) = best(&mut scripted);

    let b = report(
        "default mapping (no script), one core",
        READINGS,
        d_base,
        None,
    );
    let s = report(
        "10-line script, RulesEngine::process, one core",
        READINGS,
        d_script,
        Some(b),
    );
    let d_stage = stage(dir.path(), input.clone());
    report(
        "10-line script, whole stage (channels+worker)",
        READINGS,
        d_stage,
        Some(b),
    );
    #[allow(clippy::cast_precision_loss)]
    let pass = 100.0 * published as f64 / READINGS as f64;
    println!(
        "published {published} of {READINGS} readings ({pass:.1}% passed the deadband and quality check)"
    );
    let verdict = if s >= 100_000.0 { "met" } else { "NOT met" };
    println!(
        "target 100,000 readings/s on one core: {verdict} ({:.2}× the target)",
        s / 100_000.0
    );
}
