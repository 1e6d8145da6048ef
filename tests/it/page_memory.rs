//! The status page's history with 1,000 points polled every second, in the
//! real binary: the history's buffers stay within 4 MiB (the gauge
//! `fieldgate_history_bytes`), and the gateway's anonymous memory does not
//! grow once every point has its buffers, while the buckets fill and wrap
//! (`history: 20s` in 1 s buckets here). The full hour is measured by
//! `cargo bench --bench history`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::page::get;
use crate::support::{Gateway, free_port};

const DEVICES: usize = 10;
const POINTS: usize = 100;

/// A memory figure of a process from `/proc/PID/status` (`VmRSS`,
/// `RssAnon`), in bytes.
pub(crate) fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        * 1024
}

fn rss_anon(pid: u32) -> u64 {
    proc_bytes(pid, "RssAnon")
}

fn history_bytes(http: u16) -> u64 {
    let (_, _, text) = get(http, "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix("fieldgate_history_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_points_of_history_stay_bounded() {
    let http = free_port();
    let mut yaml = format!(
        "gateway:\n  id: mem-gw\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\n\
         http:\n  listen: \"127.0.0.1:{http}\"\n  history: 20s\n  history_bucket: 1s\ndevices:\n"
    );
    for d in 0..DEVICES {
        let _ = writeln!(
            yaml,
            "  - name: d{d}\n    kind: simulated\n    poll: 1s\n    points:"
        );
        for p in 0..POINTS {
            let _ = writeln!(
                yaml,
                "      - {{ name: p{p}, signal: random, min: 0, max: 100 }}"
            );
        }
    }
    let gw = Gateway::start(&yaml);
    let pid = gw.child.id();
    // every point has its buffers: 1,000 x (120 raw x 8 + 20 buckets x 20 bytes)
    let full = (DEVICES * POINTS * (120 * 8 + 20 * 20)) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while history_bytes(http) < full {
        assert!(
            Instant::now() < deadline,
            "history never complete: {}",
            history_bytes(http)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_anon(pid);
    // the buckets fill and wrap (20 of 1 s), the raw rings fill
    std::thread::sleep(Duration::from_secs(30));
    let after = rss_anon(pid);
    let bytes = history_bytes(http);
    println!(
        "history {} KiB for {} points; RssAnon {} -> {} KiB",
        bytes / 1024,
        DEVICES * POINTS,
        before / 1024,
        after / 1024
    );
    assert_eq!(bytes, full, "the buffers are allocated once at full size");
    // the page's document of all of it still comes whole
    let (status, _, body) = get(http, "/api/v1/history", None);
    assert!(status.contains("200"), "{status}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["devices"].as_array().unwrap().len(), DEVICES);
    assert_eq!(
        doc["devices"][9]["points"].as_object().unwrap().len(),
        POINTS
    );
    println!("/api/v1/history: {} KiB", body.len() / 1024);
    assert!(bytes <= 4 << 20, "{bytes} bytes over 4 MiB");
    assert!(
        after.saturating_sub(before) < 2 << 20,
        "RssAnon grew by {} KiB in 30 s",
        (after - before) / 1024
    );
}
