//! Write-behind (`uplink.buffer.write_behind`) with the real binary: while
//! the uplink acknowledges in time nothing is written per reading
//! (`/proc/PID/io` `write_bytes`); SIGTERM writes every reading still in
//! memory; SIGKILL loses at most the window, counted by the readings'
//! sequence numbers (the counter signal).

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::*;
use crate::support::{ConfigDir, Gateway, Sub};
use crate::upstream::{Mosquitto, gateway_yaml, gateway_yaml_from};

/// The pid of the gateway running with config `cfg` (found in /proc by
/// its command line).
fn pid_of(cfg: &ConfigDir) -> u32 {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(cfg.path_str()))
                .unwrap_or(false)
        })
        .expect("the gateway's process")
}

/// Bytes process `pid` caused to be written to the block device.
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .expect("/proc/PID/io")
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
        .expect("write_bytes")
}

/// A gateway (a counter every `poll`) whose uplink never connects.
fn unreachable(poll: &str, write_behind: &str) -> Gateway {
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port());
    let extra = format!("  buffer: {{ write_behind: {write_behind} }}");
    Gateway::start(&gateway_yaml_from(&url, poll, 0, "gw1/dev/#", &extra))
}

#[tokio::test]
async fn nothing_is_written_per_reading_while_acks_come_in_time() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let gw = Gateway::start(&gateway_yaml(
        &url,
        "10ms",
        // room for a loaded machine: the acks come in milliseconds
        "  buffer: { write_behind: 5s }",
    ));
    let pid = pid_of(&gw.cfg);
    let first = wait_reading(&mut up).await;
    let before = write_bytes(pid);
    // 300 readings acknowledged upstream
    wait_upstream(&mut up, first + 300).await;
    let written = write_bytes(pid) - before;
    assert!(
        written <= 50 * 300,
        "{written} bytes written for 300 readings (goal: at most 50 a reading); log:\n{}",
        gw.log_text()
    );
}

#[tokio::test]
async fn sigterm_writes_every_reading_still_in_memory() {
    // a window far longer than the test: nothing is written before the stop
    let mut gw = unreachable("20ms", "1h");
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 50, &mut seen).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let stored: BTreeSet<i64> = outbox_values(&gw.cfg, 10_000).into_iter().collect();
    let missing: Vec<&i64> = seen.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "seen locally, not in the outbox after SIGTERM: {missing:?}; log:\n{}",
        gw.log_text()
    );
}

#[tokio::test]
async fn sigkill_loses_at_most_the_window() {
    // 1 s at a reading every 10 ms: 100 readings
    let mut gw = unreachable("10ms", "1s");
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 400, &mut seen).await;
    gw.kill();
    let last = *seen.last().expect("values");
    let stored = outbox_values(&gw.cfg, 10_000);
    let newest = *stored
        .last()
        .expect("readings older than the window were written");
    // every reading up to the newest written one is there, in order
    assert_eq!(stored, (0..=newest).collect::<Vec<i64>>());
    // what is lost is younger than the window: at most its 100 readings,
    // plus the spill's tick (a quarter window) and a commit's time
    let lost = last - newest;
    assert!(
        (0..=150).contains(&lost),
        "{lost} readings lost (last seen {last}, newest written {newest})"
    );
}
