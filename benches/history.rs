//! What the status page's trend history costs in memory: 1,000 numeric
//! points (100 devices of 10) polled every second, recorded through the
//! same path the sources use (`DeviceLast::record_all`, one batch per
//! device and poll), for an hour and a minute of reading timestamps, so
//! every point's raw readings (120) and buckets (`http.history` /
//! `http.history_bucket`, 120 with the defaults) are full. The readings'
//! clock is simulated (the run takes seconds, not an hour); the memory is
//! what a gateway holds after an hour.
//!
//! Each variant runs in its own process and reads its `RssAnon` from
//! `/proc/self/status` before the first reading and after the last: with
//! the history on (the defaults, 1h in 30 s buckets) and off (the last
//! value of each point only, as without an `http:` section). The
//! difference is the history's cost.
//!
//! Run: `cargo bench --bench history` (BENCH_POINTS=N for another count).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldgate::reading::{Quality, Reading, Value};
use fieldgate::recent::history;
use fieldgate::recent::{self, DeviceLast};

const PER_DEVICE: usize = 10;
/// An hour and a minute of polls, one a second.
const POLLS: i64 = 3660;

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssAnon line")
}

/// Records `POLLS` polls of `points` points; prints `variant before after bytes`.
fn run(variant: &str, points: usize) {
    if variant == "on" {
        history::configure(Duration::from_secs(3600), Duration::from_secs(30));
    }
    let devices: Vec<(Arc<str>, DeviceLast, Vec<Arc<str>>)> = (0..points.div_ceil(PER_DEVICE))
        .map(|d| {
            let name: Arc<str> = format!("dev{d:03}").into();
            let last = DeviceLast::of(&name);
            let pts = (0..PER_DEVICE).map(|p| format!("p{p}").into()).collect();
            (name, last, pts)
        })
        .collect();
    let mut batch: Vec<Reading> = Vec::with_capacity(PER_DEVICE);
    let unit: Arc<str> = "°C".into();
    let before = rss_anon_kib();
    let t0: i64 = 1_796_000_000_000;
    let started = Instant::now();
    for poll in 0..POLLS {
        let ts = t0 + poll * 1000;
        for (name, last, pts) in &devices {
            batch.clear();
            batch.extend(pts.iter().enumerate().map(|(i, p)| Reading {
                device: name.clone(),
                point: p.clone(),
                value: Value::Float(20.0 + ((poll as f64 + i as f64) / 60.0).sin() * 5.0),
                unit: Some(unit.clone()),
                ts,
                quality: Quality::Good,
            }));
            last.record_all(&batch);
        }
    }
    let took = started.elapsed();
    let after = rss_anon_kib();
    println!(
        "{variant} {before} {after} {} {}",
        recent::history_bytes(),
        took.as_millis()
    );
}

fn main() {
    let points: usize = std::env::var("BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if let Ok(variant) = std::env::var("FIELDGATE_BENCH_HISTORY") {
        run(&variant, points);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let measure = |variant: &str| -> Vec<u64> {
        let out = Command::new(&exe)
            .env("FIELDGATE_BENCH_HISTORY", variant)
            .env("BENCH_POINTS", points.to_string())
            .output()
            .expect("run variant");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with(variant))
            .unwrap_or_else(|| panic!("no result from {variant}: {text}"));
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().expect("number"))
            .collect()
    };
    let off = measure("off");
    let on = measure("on");
    let grew = |v: &[u64]| v[1].saturating_sub(v[0]);
    let cost_kib = grew(&on).saturating_sub(grew(&off));
    println!("history memory, {points} points polled every second for 61 min (buckets full)");
    println!("variant   RssAnon before  after   growth   (KiB)");
    println!(
        "off       {:>14} {:>6} {:>8}   last values only",
        off[0],
        off[1],
        grew(&off)
    );
    println!(
        "on        {:>14} {:>6} {:>8}   1h in 30 s buckets + 2 min raw",
        on[0],
        on[1],
        grew(&on)
    );
    println!(
        "history: {} KiB RssAnon in all, {:.0} bytes a point (buffers: {} bytes a point); {:.0} ns a reading recorded (on) vs {:.0} (off)",
        cost_kib,
        cost_kib as f64 * 1024.0 / points as f64,
        on[2] / points.max(1) as u64,
        on[3] as f64 * 1e6 / (POLLS as f64 * points as f64),
        off[3] as f64 * 1e6 / (POLLS as f64 * points as f64),
    );
}
