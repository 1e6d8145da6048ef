//! A clock step on a board without a real-time clock (issue 13, item 4):
//! the gateway starts with its wall clock two days behind (a Pi that
//! booted at its last shutdown time), stores readings while the uplink is
//! cut, then NTP syncs and the clock jumps two days ahead. `max_age` (1h
//! here) must not expire the backlog: every stored reading arrives once the
//! uplink is back.
//!
//! The gateway's wall clock is stepped with libfaketime (its monotonic
//! clock is left alone, as a real step leaves it).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::{READING, SECS};
use crate::support::{ConfigDir, Gateway, Sub, fill, free_port};
use crate::upstream::{Mosquitto, Proxy, counter, gateway_yaml};

/// libfaketime's preload library (the `faketime` package).
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .expect("read /usr/lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
        .expect("libfaketime not found: apt-get install faketime")
}

/// `depth=N` of each `outbox expiry pass` line in `log` after `from`.
fn passes(log: &str, from: usize) -> Vec<u64> {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("outbox expiry pass"))
        .filter_map(|l| {
            l.split("depth=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until `pred` holds for the expiry passes after `from`.
fn wait_passes(gw: &Gateway, from: usize, pred: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let p = passes(&gw.log_text(), from);
        if pred(&p) {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expiry passes after {from}: {p:?}\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_clock_step_at_ntp_sync_expires_nothing_and_the_backlog_arrives() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::AtLeastOnce).await;
    let proxy = Proxy::start(broker.port).await;
    proxy.cut();
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let yaml = gateway_yaml(&url, "50ms", "  buffer: { max_age: 1h }\n");
    let cfg = ConfigDir::new("");
    let clock = cfg.dir.path().join("faketime");
    std::fs::write(&clock, "-2d\n").expect("write faketime file");
    let data = cfg.dir.path().join("data");
    let port = free_port();
    std::fs::write(&cfg.path, fill(&yaml, port, &data)).expect("write config");
    let lib = libfaketime();
    let mut gw = Gateway::spawn(
        cfg,
        port,
        &[
            ("LD_PRELOAD", lib.to_str().expect("utf-8")),
            ("FAKETIME_TIMESTAMP_FILE", clock.to_str().expect("utf-8")),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("RUST_LOG", "info,fieldgate::bridge::outbox=debug"),
        ],
    );
    // readings pile up in the outbox while the uplink is cut
    let before = wait_passes(&gw, 0, |p| p.last().is_some_and(|d| *d >= 20));
    let stored = *before.last().expect("a pass");

    // NTP syncs: the wall clock jumps two days ahead
    let from = gw.log_text().len();
    std::fs::write(&clock, "+0\n").expect("step the clock");
    // two passes that surely saw the new time; the backlog is still there
    let after = wait_passes(&gw, from, |p| p.len() >= 2);
    assert!(
        after.iter().all(|d| *d >= stored),
        "{after:?} after {stored}"
    );
    assert!(
        !gw.log_text().contains("policy=\"expired\""),
        "expired after the step:\n{}",
        gw.log_text()
    );

    // the uplink comes back: everything stored before the step arrives
    proxy.restore();
    let mut got = BTreeSet::new();
    while !(0..stored as i64).all(|v| got.contains(&v)) {
        let m = up.wait_topic(READING, SECS).await;
        got.insert(counter(&m));
    }
    assert!(gw.terminate(SECS).success());
    let log = gw.log_text();
    assert!(log.contains("expired=0"), "bridge stopped line:\n{log}");
}
