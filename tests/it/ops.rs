//! Operations: the metrics and health endpoint, and systemd notification
//! captured on a test NOTIFY_SOCKET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::{Gateway, Sub, free_port};

const SECS: Duration = Duration::from_secs(10);

fn config(metrics_port: u16) -> String {
    format!(
        r#"
gateway:
  id: gw-ops
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
metrics:
  listen: "127.0.0.1:{metrics_port}"
devices:
  - name: pump
    kind: simulated
    poll: 100ms
    points:
      - {{ name: flow, signal: counter }}
"#
    )
}

/// A plain HTTP/1.0 GET; returns (status line, body).
pub(crate) fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics endpoint");
    s.set_read_timeout(Some(SECS)).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn readings_of(metrics: &str, device: &str) -> u64 {
    let prefix = format!("fieldgate_readings_total{{device=\"{device}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no readings metric for {device}:\n{metrics}"))
}

#[tokio::test]
async fn metrics_move_with_traffic_and_healthz_reports_devices() {
    let mport = free_port();
    let gw = Gateway::start(&config(mport));
    let mut sub = Sub::connect(gw.port, &["gw-ops/pump/flow"], QoS::AtMostOnce).await;
    sub.next(SECS).await;

    let (status, first) = http_get(mport, "/metrics");
    assert!(status.contains("200"), "{status}");
    let before = readings_of(&first, "pump");
    assert!(
        first.contains("fieldgate_device_up{device=\"pump\"} 1"),
        "{first}"
    );
    // three more readings pass through the broker...
    for _ in 0..3 {
        sub.next(SECS).await;
    }
    // ...and the counter moved by at least as many
    let (_, second) = http_get(mport, "/metrics");
    let after = readings_of(&second, "pump");
    assert!(after >= before + 3, "readings {before} -> {after}");
    assert!(second.contains("fieldgate_published_total"), "{second}");
    // the broker registered its metrics at start, before any drop (label
    // families appear with their first label set)
    for name in [
        "fieldgate_broker_dropped",
        "fieldgate_broker_publish_denied",
        "fieldgate_broker_clients_mqtt5",
        "fieldgate_broker_messages_expired",
        "fieldgate_broker_shared_redelivered",
    ] {
        assert!(
            second.contains(&format!("# TYPE {name} ")),
            "no {name}:\n{second}"
        );
    }
    let conns: i64 = second
        .lines()
        .find_map(|l| l.strip_prefix("fieldgate_broker_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no broker_connections metric:\n{second}"));
    assert!(
        conns >= 1,
        "our subscriber is connected, metric says {conns}"
    );

    let (status, body) = http_get(mport, "/healthz");
    assert!(status.contains("200"), "{status}");
    let h: serde_json::Value = serde_json::from_str(&body).expect("healthz is JSON");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["gateway"], "gw-ops");
    assert_eq!(h["devices"]["pump"]["state"], "online", "{h}");
    assert_eq!(h["devices_online"], 1);
}

/// Collects notify datagrams until `pred` holds for one, or panics.
pub(crate) fn wait_datagram(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = pred(&msg);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no matching notification within {within:?}; got {seen:?}");
}

#[tokio::test]
async fn systemd_gets_ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    let sock_path = path.to_str().expect("utf-8 path");
    // 400 ms watchdog: the gateway must ping every 200 ms
    let mut gw = Gateway::start_with_env(
        &config(free_port()),
        &[("NOTIFY_SOCKET", sock_path), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = Vec::new();
    wait_datagram(&sock, &mut seen, SECS, |m| {
        m.lines().any(|l| l == "READY=1")
    });
    for _ in 0..3 {
        wait_datagram(&sock, &mut seen, SECS, |m| {
            m.lines().any(|l| l == "WATCHDOG=1")
        });
    }
    wait_datagram(&sock, &mut seen, SECS, |m| {
        m.contains("STATUS=1/1 devices online")
    });
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    wait_datagram(&sock, &mut seen, SECS, |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert_eq!(gw.wait_exit(SECS).code(), Some(0));
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/fieldgate.service"
    ))
    .expect("read unit");
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "RestartPreventExitStatus=78",
        "ExecStartPre=/usr/bin/fieldgate check",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    // verify the unit as installed, with the binary under test in place of /usr/bin/fieldgate
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fieldgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/fieldgate", crate::support::BIN),
    )
    .expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("fieldgate.service:"),
        "systemd-analyze verify: {text}"
    );
}

#[tokio::test]
async fn watchdog_pings_stop_while_the_pipeline_is_stuck() {
    // A rule that takes seconds per reading (allowed by a raised operation
    // limit) wedges the pipeline: readings queue up and nothing is published.
    let yaml = r#"
gateway:
  id: gw-wd
  data_dir: "{data_dir}"
broker:
  listen: "127.0.0.1:{port}"
devices:
  - name: fast
    kind: simulated
    poll: 10ms
    points:
      - { name: n, signal: counter }
rules:
  scripts: [slow.rhai]
  limits: { max_operations: 4000000000 }
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    let port = free_port();
    let cfg = crate::support::ConfigDir::new("");
    cfg.write(
        "slow.rhai",
        "fn on_reading(r) { let x = 0; for i in 0..400000000 { x += 1; } emit(r); }\n",
    );
    std::fs::write(
        &cfg.path,
        crate::support::fill(yaml, port, &cfg.dir.path().join("data")),
    )
    .expect("config");
    let _gw = Gateway::spawn(
        cfg,
        port,
        &[
            ("NOTIFY_SOCKET", path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    wait_datagram(&sock, &mut seen, SECS, |m| {
        m.lines().any(|l| l == "READY=1")
    });
    // the watchdog is withheld, and systemd is told why
    wait_datagram(&sock, &mut seen, SECS, |m| {
        m.contains("STATUS=stuck at readings")
    });
    let stuck = seen.last().expect("a datagram").clone();
    assert!(!stuck.contains("WATCHDOG=1"), "{stuck}");
    wait_datagram(&sock, &mut seen, SECS, |_| true);
    let next = seen.last().expect("a datagram").clone();
    assert!(
        next.contains("STATUS=stuck") && !next.contains("WATCHDOG=1"),
        "still stuck, no ping: {next}"
    );
}
