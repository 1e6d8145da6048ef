//! The HTTP listener under attack, from raw sockets: 600 connections that
//! send half a request head and never finish (slowloris). A normal
//! `GET /healthz` still answers within a second during the attack, every
//! half-open socket is closed (the newest ones after `http.header_timeout`),
//! an idle keep-alive connection is closed after the same time, and the
//! gateway's resident memory stays bounded. Past `max_connections` of
//! connections that each sent a whole request, a new client gets 503; the
//! limits' config errors name their keys.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Gateway, free_port};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const ATTACKERS: usize = 600;

fn gateway(http: u16) -> Gateway {
    Gateway::start(&format!(
        r#"
gateway:
  id: http-gw
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
http:
  listen: "127.0.0.1:{http}"
  header_timeout: 2s
devices:
  - name: line
    kind: simulated
    poll: 1s
    points:
      - {{ name: parts, signal: counter }}
"#
    ))
}

/// Resident memory of a process, in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    crate::page_memory::proc_bytes(pid, "VmRSS")
}

/// A whole `GET path` on a new connection: (status line, body, time taken).
fn get(http: u16, path: &str) -> (String, String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    (status, body.to_string(), t.elapsed())
}

/// Waits until the server closes `s` (EOF or reset); `None` when it is
/// still open at `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {} // a 408 or similar before the close
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return None;
            }
            Err(_) => return Some(Instant::now()), // reset
        }
    }
}

fn half_request(http: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect attacker");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("half a head");
    s
}

#[test]
fn half_sent_requests_neither_lock_out_healthz_nor_stay_open_nor_grow_memory() {
    let http = free_port();
    let gw = gateway(http);
    let pid = gw.child.id();
    assert!(get(http, "/healthz").0.contains("200"));
    let before = rss(pid);

    // one half-sent request alone: closed by the header timer, not before
    let mut lone = half_request(http);
    let opened = Instant::now();
    let at = closed_by(&mut lone, opened + HEADER_TIMEOUT + Duration::from_secs(3))
        .expect("a lone half-sent request is closed after header_timeout");
    let took = at - opened;
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(300),
        "closed after {took:?}, before the {HEADER_TIMEOUT:?} header timeout"
    );

    // the attack
    let mut attackers: Vec<TcpStream> = (0..ATTACKERS).map(|_| half_request(http)).collect();
    let last_opened = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (status, body, took) = get(http, "/healthz");
        assert!(
            status.contains("200"),
            "healthz during the attack: {status}"
        );
        assert!(body.contains("\"gateway\":\"http-gw\""), "{body}");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "healthz took {slowest:?} during the attack"
    );
    let during = rss(pid);

    // every half-open socket is closed, the newest by the header timer
    let deadline = last_opened + HEADER_TIMEOUT + Duration::from_secs(3);
    let open: usize = attackers
        .iter_mut()
        .map(|s| usize::from(closed_by(s, deadline).is_none()))
        .sum();
    assert_eq!(open, 0, "{open} half-sent requests still open");
    let (_, metrics, _) = get(http, "/metrics");
    for reason in ["header_timeout", "evicted"] {
        let line = format!("fieldgate_http_closed_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{line} in /metrics");
    }

    // an idle keep-alive connection is closed after the same time
    let mut idle = TcpStream::connect(("127.0.0.1", http)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    assert!(
        closed_by(
            &mut idle,
            answered + HEADER_TIMEOUT + Duration::from_secs(3)
        )
        .is_some(),
        "an idle keep-alive connection stays open"
    );

    let after = rss(pid);
    let grew = during.max(after).saturating_sub(before);
    println!(
        "RSS before {} KiB, during {} KiB, after {} KiB",
        before / 1024,
        during / 1024,
        after / 1024
    );
    assert!(
        grew < 16 << 20,
        "RSS grew by {} KiB under {ATTACKERS} half-sent requests",
        grew / 1024
    );
    assert!(get(http, "/healthz").0.contains("200"), "alive after");
}

#[test]
fn http_limits_and_history_out_of_range_are_config_errors() {
    for (keys, path) in [
        ("max_connections: 0", "http.max_connections"),
        ("header_timeout: 10ms", "http.header_timeout"),
        (
            "history: 1h\n  history_bucket: 100ms",
            "http.history_bucket",
        ),
        ("history: 1h\n  history_bucket: 2h", "http.history_bucket"),
        ("history: 7d\n  history_bucket: 1s", "http.history"),
    ] {
        let cfg = crate::support::ConfigDir::new(&format!(
            "gateway: {{ id: gw }}\nhttp:\n  listen: \"127.0.0.1:9181\"\n  {keys}\n"
        ));
        let out = crate::support::fieldgate(&["check", "-c", cfg.path_str()]);
        assert_eq!(out.status.code(), Some(78), "{keys}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(path), "{keys}: {err}");
    }
}

#[test]
fn past_max_connections_of_finished_requests_a_new_client_gets_503() {
    let http = free_port();
    let _gw = gateway(http);
    // 64 keep-alive connections that each had a whole request: none is
    // closed to make room
    let mut kept: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    let (status, body, _) = get(http, "/healthz");
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("too many connections"), "{body}");
    // once they idle out (header_timeout), the listener serves again
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(3);
    for s in kept.iter_mut() {
        assert!(closed_by(s, deadline).is_some(), "idle connection kept");
    }
    assert!(get(http, "/healthz").0.contains("200"));
}
