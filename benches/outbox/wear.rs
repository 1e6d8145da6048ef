//! Part 4 of the outbox benchmark, wear: what the bridge writes to the storage device per forwarded
//! 100-byte QoS 1 message while the uplink is up, and its fsyncs per
//! second, at a fixed 1,000 messages/s of the gateway's own publishes for
//! 10 s (`synchronous: full`, the default). Bytes from `/proc/self/io`
//! `write_bytes` (what this process caused to be written to the block
//! device, in a folder under the target directory, not tmpfs); fsyncs
//! counted by `strace -c` attached to every thread of this process (the
//! line says so when strace is missing).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fieldgate::bridge::{Bridge, UplinkConfig};
use fieldgate::reading::{Publish, Qos};
use tokio::sync::mpsc;

const RATE: u64 = 1000;
const SECS: u64 = 10;

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// strace counting fsync/fdatasync of every thread of this process.
fn strace(out: &Path) -> Option<Child> {
    let mut cmd = Command::new("strace");
    cmd.args(["-c", "-f", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(out);
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        cmd.arg("-p").arg(t.file_name());
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()
}

/// The calls column of the fsync and fdatasync rows of a `strace -c` summary.
fn fsyncs(summary: &str) -> u64 {
    summary
        .lines()
        .filter(|l| l.ends_with("fsync") || l.ends_with("fdatasync"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum()
}

pub async fn wear(uplink: UplinkConfig) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (tx, rx) = mpsc::channel(1024);
    let (bridge, mut local) = Bridge::start(&uplink, "gw1", dir.path(), rx, 1024, None)
        .await
        .expect("bridge");
    tokio::spawn(async move { while local.recv().await.is_some() {} });
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.counters.connected.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the uplink did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = dir.path().join("strace.txt");
    let tracer = strace(&out);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = RATE * SECS;
    let acked0 = bridge.counters.acked.load(Relaxed);
    let (w0, t0) = (write_bytes(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..n {
        tick.tick().await;
        let mut payload = format!("{{\"value\":{i},\"ts\":1763773200123,\"quality\":\"good\"}}");
        payload.extend(std::iter::repeat_n(
            ' ',
            100usize.saturating_sub(payload.len()),
        ));
        let p = Publish {
            topic: "gw1/dev/n".into(),
            payload: payload.into(),
            qos: Qos::from_u8(1).unwrap_or_default(),
            retain: false,
        };
        tx.send(p).await.expect("intake");
    }
    // acknowledged upstream and deleted
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.counters.acked.load(Relaxed) < acked0 + n
        || bridge.counters.depth.load(Relaxed) > 0
    {
        assert!(
            Instant::now() < deadline,
            "not all acknowledged and deleted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (w1, took) = (write_bytes(), t0.elapsed());
    let calls = tracer.map(|mut c| {
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = c.wait();
        fsyncs(&std::fs::read_to_string(&out).unwrap_or_default())
    });
    println!("wear at {RATE} msg/s for {SECS} s, uplink up (100-byte QoS 1, synchronous = full)");
    println!(
        "  bytes written to the device : {:>8.0} per forwarded message ({:.1} MB/h at this rate)",
        (w1 - w0) as f64 / n as f64,
        (w1 - w0) as f64 / took.as_secs_f64() * 3600.0 / 1e6
    );
    match calls {
        Some(c) => println!(
            "  fsync + fdatasync           : {:>8.0} per second ({c} in {:.1} s)\n",
            c as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        ),
        None => println!("  fsync + fdatasync           : not measured (strace not found)\n"),
    }
    drop(tx);
    bridge.stop(Duration::from_secs(10)).await;
}
