//! Modbus polling benchmark: the real release binary polls 10 Modbus TCP
//! devices × 100 points every 100 ms, served by tokio-modbus servers in
//! this process; in the same run a plain tokio-modbus client loop (its own
//! process) does the same reads.
//!
//! Run: `cargo bench --bench modbus` (`FG_BENCH_SECS=N` sets the measured
//! window, default 10 s; `FG_BENCH_BASE=/path/to/fieldgate` runs that
//! build too, before this one for each payload, for a before/after in
//! the same run; `FG_BENCH_ONLY=text` runs only the payloads whose name
//! contains that text, e.g. `Sparkplug`, and `FG_BENCH_ONLY==per_device`
//! only the payload of exactly that name; `FG_BENCH_INTERLEAVED=N` measures
//! the loop and each build in turn instead, N rounds, see `interleaved`).
//!
//! The gateway runs six times, one after the other on the same servers:
//! with `rules.payload: per_point` (one message per reading, the default),
//! with `per_device` (one message per device per poll, issue 27), with
//! `per_device` plus the Sparkplug B edge node (`sparkplug:`, target
//! local, issue 27), and with the node alone (`payload: none`: no JSON),
//! each Sparkplug setting with report by exception off (every DDATA carries
//! all 100 metrics of a poll) and on (only the metrics that changed). A tenth
//! of the registers change at every poll (register r, r % 10 == 0, reads
//! r + the request count % 100), the rest keep their value: what report by
//! exception saves depends on that share.
//!
//! Prints: requests per poll cycle seen by the servers beside the merged
//! plan, readings/s (the gateway's `fieldgate_readings_total`), the CPU
//! share of one core and the resident memory of the gateway (and of the
//! idle gateway with no devices), and the plain loop's CPU per reading;
//! for each payload the CPU per reading and its ratio to the loop (the
//! loop's window at the end of the run, and the loop's own window run just
//! before that payload's: the shared machine's load drifts), and the
//! bytes on the wire per reading: what a QoS 0 subscriber to `bench/#`
//! receives (whole PUBLISH packets, device status excluded), counted in a
//! second window after the CPU window, so that the CPU figures stay those
//! of a gateway with nobody subscribed, as before.
//! CPU is read twice: from `/proc/<pid>/stat` (10 ms ticks: the loop's
//! 0.3-0.6% of a core over 10 s is only 3-6 ticks, so its figure moves by
//! a third with one tick) and from each thread's
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds; a thread that ends
//! inside the window loses its share, and the line says how many did).
//! Targets (issue 15): 10,000 readings/s, under 20% of one core, under
//! 2 MB more RSS than the idle gateway, CPU per reading ≤ 1.5 × the loop's
//! (issue 27: with `per_device`, and with Sparkplug DDATA).
//! No MQTT client subscribes during the run: the readings go through the
//! rules stage and into the embedded broker, which has nobody to deliver to.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

#[path = "modbus/interleaved.rs"]
mod interleaved;

const DEVICES: usize = 10;
const POINTS: u16 = 100;
const POLL: Duration = Duration::from_millis(100);

/// 100 holding registers; counts the requests it serves.
#[derive(Clone)]
struct Device(Arc<AtomicU64>);

impl Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Exception>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let served = self.0.fetch_add(1, Ordering::Relaxed);
        let r = match req.request {
            Request::ReadHoldingRegisters(a, n) if u32::from(a) + u32::from(n) <= 1000 => {
                // a tenth of the registers change at every poll
                let moving = |r: u16| {
                    if r.is_multiple_of(10) {
                        r + (served % 100) as u16
                    } else {
                        r
                    }
                };
                Ok(Some(Response::ReadHoldingRegisters(
                    (a..a + n).map(moving).collect(),
                )))
            }
            _ => Err(ExceptionCode::IllegalDataAddress),
        };
        Box::pin(async move { r })
    }
}

async fn serve(count: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio_modbus::server::tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = move |stream, socket_addr| {
            let d = Device(count.clone());
            async move {
                tokio_modbus::server::tcp::accept_tcp_connection(stream, socket_addr, move |_| {
                    Ok(Some(d.clone()))
                })
            }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    addr
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// utime + stime of a process in clock ticks (USER_HZ = 100 on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Nanoseconds on CPU so far of each thread of a process, by thread id
/// (the first field of `/proc/<pid>/task/<tid>/schedstat`: the
/// scheduler's own count, where `/proc/<pid>/stat` rounds to 10 ms ticks).
fn thread_ns(pid: u32) -> std::collections::HashMap<u64, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let tid = e.file_name().to_str().and_then(|t| t.parse::<u64>().ok());
        let ns = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let (Some(tid), Some(ns)) = (tid, ns) {
            out.insert(tid, ns);
        }
    }
    out
}

/// CPU nanoseconds of a process between two [`thread_ns`] snapshots, and
/// how many threads ended in between (their time in the window is lost).
fn ns_between(
    before: &std::collections::HashMap<u64, u64>,
    after: &std::collections::HashMap<u64, u64>,
) -> (u64, usize) {
    let ns = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    let ended = before.keys().filter(|t| !after.contains_key(t)).count();
    (ns, ended)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/<pid>/status (`VmRSS:`, `RssAnon:`: heap and stacks).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Sum of `fieldgate_readings_total` on `/metrics`.
fn readings(metrics: u16) -> u64 {
    let Ok(mut s) = StdStream::connect(("127.0.0.1", metrics)) else {
        return 0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("fieldgate_readings_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM, as systemd stops the gateway (a profiler wrapping it
    /// writes its data then), and SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running gateway: the process, its broker and metrics ports, its config.
struct Gw {
    proc: Proc,
    port: u16,
    metrics: u16,
    cfg: std::path::PathBuf,
}

/// `extra`: more sections of the config (`sparkplug:`), before `devices:`;
/// `bin`: the gateway binary.
fn gateway(
    dir: &std::path::Path,
    bin: &std::path::Path,
    devices: &str,
    payload: &str,
    extra: &str,
) -> Gw {
    let (port, metrics) = (free_port(), free_port());
    let cfg = dir.join(format!("fieldgate-{port}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  id: bench\n  data_dir: \"{}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\nmetrics:\n  listen: \"127.0.0.1:{metrics}\"\nrules:\n  payload: {payload}\n{extra}devices:{devices}",
            dir.join(format!("data-{port}")).display()
        ),
    )
    .expect("write config");
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fieldgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while StdStream::connect(("127.0.0.1", metrics)).is_err() {
        assert!(Instant::now() < deadline, "fieldgate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Gw {
        proc: Proc(child),
        port,
        metrics,
        cfg,
    }
}

/// An MQTT 3.1.1 remaining length.
fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// What a subscriber received: PUBLISH packets and their bytes.
#[derive(Default)]
struct Wire {
    messages: u64,
    bytes: u64,
    /// Readings the gateway counted in the same window.
    readings: u64,
}

/// What a run's subscriber listens to and counts: its filter, and which
/// topics carry readings (device status and births are left out).
struct Listen {
    filter: &'static [u8],
    counts: fn(&[u8]) -> bool,
}

const JSON: Listen = Listen {
    filter: b"bench/#",
    counts: |t| !t.starts_with(b"bench/status"),
};

const SPARKPLUG: Listen = Listen {
    filter: b"spBv1.0/#",
    counts: |t| t.windows(7).any(|w| w == b"/DDATA/"),
};

/// Subscribes to `listen.filter` at QoS 0 on a raw socket for `secs` and
/// counts the PUBLISH packets received (whole packets: fixed header,
/// topic, payload) on the topics `listen.counts`.
fn wire(port: u16, metrics: u16, secs: f64, listen: &Listen) -> Wire {
    let mut s = StdStream::connect(("127.0.0.1", port)).expect("connect subscriber");
    let mut connect = vec![0x10];
    let body: &[u8] = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x0abench-wire";
    remaining_length(body.len(), &mut connect);
    connect.extend_from_slice(body);
    let filter = listen.filter;
    let mut sub = vec![0x82];
    remaining_length(2 + 2 + filter.len() + 1, &mut sub);
    sub.extend_from_slice(&[0, 1, 0, filter.len() as u8]);
    sub.extend_from_slice(filter);
    sub.push(0);
    s.write_all(&connect)
        .and_then(|()| s.write_all(&sub))
        .expect("subscribe");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    let mut w = Wire::default();
    let mut subscribed = false;
    let mut end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        // whole packets at the front of `buf`
        let mut at = 0;
        loop {
            let (mut len, mut mul, mut i) = (0usize, 1usize, at + 1);
            let mut complete = false;
            while i < buf.len() {
                len += usize::from(buf[i] & 0x7f) * mul;
                mul *= 128;
                i += 1;
                if buf[i - 1] & 0x80 == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete || i + len > buf.len() {
                break;
            }
            let kind = buf[at] >> 4;
            if kind == 9 && !subscribed {
                // SUBACK: the window starts
                subscribed = true;
                w.readings = readings(metrics);
                end = Instant::now() + Duration::from_secs_f64(secs);
            } else if kind == 3 && subscribed {
                let tl = usize::from(buf[i]) << 8 | usize::from(buf[i + 1]);
                let topic = &buf[i + 2..i + 2 + tl];
                if (listen.counts)(topic) {
                    w.messages += 1;
                    w.bytes += (i + len - at) as u64;
                }
            }
            at = i + len;
        }
        buf.drain(..at);
    }
    w.readings = readings(metrics) - w.readings;
    w
}

/// The plain loop (run as a child of this binary): one task per device,
/// read all 100 registers every 100 ms, turn them into f64 values.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn plain_loop(addrs: &str) {
    let sink = Arc::new(AtomicU64::new(0));
    for a in addrs.split(',') {
        let addr: SocketAddr = a.parse().expect("addr");
        let sink = sink.clone();
        tokio::spawn(async move {
            use tokio_modbus::prelude::*;
            let mut ctx = tcp::connect(addr).await.expect("connect");
            let mut tick = tokio::time::interval(POLL);
            loop {
                tick.tick().await;
                let r = tokio::time::timeout(
                    Duration::from_millis(500),
                    ctx.read_holding_registers(0, POINTS),
                )
                .await;
                if let Ok(Ok(Ok(words))) = r {
                    let vals: Vec<f64> = words.iter().map(|w| f64::from(*w)).collect();
                    sink.fetch_add(vals.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    std::future::pending::<()>().await;
}

struct Window {
    secs: f64,
    cpu: f64,
    /// CPU share from the scheduler's per-thread nanoseconds
    sched_cpu: f64,
    threads_ended: usize,
    rss: u64,
    anon: u64,
    requests: u64,
}

fn measure(pid: u32, counts: &[Arc<AtomicU64>], secs: u64) -> Window {
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (t0, c0, n0, r0) = (Instant::now(), cpu_ticks(pid), thread_ns(pid), total());
    std::thread::sleep(Duration::from_secs(secs));
    let secs = t0.elapsed().as_secs_f64();
    let (ns, threads_ended) = ns_between(&n0, &thread_ns(pid));
    Window {
        secs,
        cpu: (cpu_ticks(pid) - c0) as f64 / 100.0 / secs,
        sched_cpu: ns as f64 / 1e9 / secs,
        threads_ended,
        rss: rss_kib(pid),
        anon: status_kib(pid, "RssAnon:"),
        requests: total() - r0,
    }
}

/// The plain loop: a child process of this binary, polling `addrs`.
fn spawn_plain(addrs: &[SocketAddr]) -> Proc {
    Proc(
        Command::new(std::env::current_exe().expect("own path"))
            .env(
                "FG_MODBUS_PLAIN",
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn plain loop"),
    )
}

/// The plain loop on `addrs`, measured for `secs` after 2 s to settle.
fn plain_window(addrs: &[SocketAddr], counts: &[Arc<AtomicU64>], secs: u64) -> Window {
    let plain = spawn_plain(addrs);
    std::thread::sleep(Duration::from_secs(2));
    measure(plain.0.id(), counts, secs)
}

/// The plain loop's CPU per value from the scheduler's nanoseconds.
fn sched_per_value(p: &Window) -> f64 {
    let rate = p.requests as f64 * f64::from(POINTS) / p.secs;
    p.sched_cpu / rate.max(1.0)
}

/// Length of the window in which a subscriber counts bytes on the wire.
const WIRE_SECS: f64 = 3.0;

/// One payload setting's run.
struct Run {
    planned: u64,
    window: Window,
    /// Readings counted by the gateway during `window`.
    readings: u64,
    wire: Wire,
}

/// Starts the gateway on `devices` with `rules.payload: payload`, lets it
/// settle, measures CPU with nobody subscribed, then counts a subscriber's
/// bytes, and stops it.
fn run_gateway(
    dir: &std::path::Path,
    bin: &std::path::Path,
    devices: &str,
    (payload, extra, listen): (&str, &str, &Listen),
    counts: &[Arc<AtomicU64>],
    secs: u64,
) -> Run {
    let gw = gateway(dir, bin, devices, payload, extra);
    let plan = Command::new(bin)
        .args(["check", "-c"])
        .arg(&gw.cfg)
        .output()
        .expect("fieldgate check");
    let plan = String::from_utf8_lossy(&plan.stdout);
    let planned: u64 = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("requests per poll: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    std::thread::sleep(Duration::from_secs(3));
    let r0 = readings(gw.metrics);
    let window = measure(gw.proc.0.id(), counts, secs);
    let r1 = readings(gw.metrics);
    let wire = wire(gw.port, gw.metrics, WIRE_SECS, listen);
    Run {
        planned,
        window,
        readings: r1 - r0,
        wire,
    }
}

fn main() {
    if let Ok(addrs) = std::env::var("FG_MODBUS_PLAIN") {
        plain_loop(&addrs);
        return;
    }
    let secs: u64 = std::env::var("FG_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let counts: Vec<Arc<AtomicU64>> = (0..DEVICES).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let addrs: Vec<SocketAddr> = counts
        .iter()
        .map(|c| rt.block_on(serve(c.clone())))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");

    // the idle gateway: same binary, no devices
    let this = std::path::PathBuf::from(env!("CARGO_BIN_EXE_fieldgate"));
    let idle = gateway(dir.path(), &this, " []\n", "per_point", "");
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_kib(idle.proc.0.id());
    let idle_anon = status_kib(idle.proc.0.id(), "RssAnon:");
    drop(idle);

    let mut devices = String::from("\n");
    for (i, a) in addrs.iter().enumerate() {
        devices += &format!(
            "  - name: d{i}\n    kind: modbus-tcp\n    address: \"{a}\"\n    poll: 100ms\n    timeout: 500ms\n    points:\n"
        );
        for p in 0..POINTS {
            devices += &format!("      - {{ name: p{p}, table: holding, address: {p} }}\n");
        }
    }
    // FG_BENCH_BASE: another build of the gateway, run before this one for
    // each payload in the same run (a before/after comparison)
    let base = std::env::var_os("FG_BENCH_BASE").map(std::path::PathBuf::from);
    let bins: Vec<(&str, &std::path::Path)> = base
        .as_deref()
        .map(|b| (" [FG_BENCH_BASE]", b))
        .into_iter()
        .chain([("", this.as_path())])
        .collect();
    let sp = |rbe: bool| format!("sparkplug:\n  group_id: bench\n  report_by_exception: {rbe}\n");
    let (sp_off, sp_on) = (sp(false), sp(true));
    // readings a message carries: one, a whole device's poll, or (0) the
    // metrics that changed: then bytes are per reading polled
    let payloads: [(&str, &str, &str, &Listen, u64); 6] = [
        ("per_point", "per_point", "", &JSON, 1),
        ("per_device", "per_device", "", &JSON, u64::from(POINTS)),
        (
            "per_device + Sparkplug DDATA, report by exception off",
            "per_device",
            sp_off.as_str(),
            &SPARKPLUG,
            u64::from(POINTS),
        ),
        (
            "per_device + Sparkplug DDATA, report by exception on",
            "per_device",
            sp_on.as_str(),
            &SPARKPLUG,
            0,
        ),
        (
            "Sparkplug DDATA only (payload: none), report by exception off",
            "none",
            sp_off.as_str(),
            &SPARKPLUG,
            u64::from(POINTS),
        ),
        (
            "Sparkplug DDATA only (payload: none), report by exception on",
            "none",
            sp_on.as_str(),
            &SPARKPLUG,
            0,
        ),
    ];
    // FG_BENCH_ONLY: run only the payloads whose name contains it
    let only = std::env::var("FG_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| match only.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(only.as_str()),
    };
    if let Some(rounds) = std::env::var("FG_BENCH_INTERLEAVED")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for (name, payload, extra, _, _) in payloads.iter().filter(|p| wanted(p.0)) {
            interleaved::interleaved(
                dir.path(),
                &bins,
                &devices,
                (name, payload, extra),
                (&addrs, &counts),
                (secs, rounds),
            );
        }
        return;
    }
    // each gateway window follows a plain loop window of its own, so that
    // a ratio can be taken between two adjacent windows as well: the
    // shared machine's load drifts over a run
    let mut runs = Vec::new();
    for (name, payload, extra, listen, per_message) in payloads {
        if !wanted(name) {
            continue;
        }
        for (label, bin) in &bins {
            let before = plain_window(&addrs, &counts, secs);
            let r = run_gateway(
                dir.path(),
                bin,
                &devices,
                (payload, extra, listen),
                &counts,
                secs,
            );
            runs.push((format!("{name}{label}"), r, per_message, before));
        }
    }

    let p = plain_window(&addrs, &counts, secs);

    let plain_rate = p.requests as f64 * f64::from(POINTS) / p.secs;
    let plain_per = p.cpu / plain_rate.max(1.0);
    let sched_plain = p.sched_cpu / plain_rate.max(1.0);
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "modbus benchmark: {DEVICES} TCP devices × {POINTS} points every {POLL:?}, {secs} s windows, loopback, 2 shared cores"
    );
    println!(
        "plain tokio-modbus loop: {plain_rate:.0} values/s, CPU {:.1}% of one core, RSS {} KiB; per value {:.2} µs (ticks), {:.3} µs (scheduler)",
        p.cpu * 100.0,
        p.rss,
        plain_per * 1e6,
        sched_plain * 1e6
    );
    let mut summary = Vec::new();
    for (payload, r, per_message, before) in &runs {
        let (payload, per_message) = (payload.as_str(), *per_message);
        let g = &r.window;
        let cycles = g.secs / POLL.as_secs_f64();
        let per_cycle = g.requests as f64 / cycles;
        let rate = r.readings as f64 / g.secs;
        let cpu_per = g.cpu / rate.max(1.0);
        let ratio = cpu_per / plain_per.max(f64::MIN_POSITIVE);
        let grow_kib = g.rss.saturating_sub(idle_rss);
        println!("rules.payload: {payload}");
        println!(
            "  requests per cycle: {per_cycle:.2} seen by the servers; merged plan {} (one per point: {})",
            r.planned,
            DEVICES as u64 * u64::from(POINTS)
        );
        println!(
            "  readings/s: {rate:.0} [{}] (target 10000)",
            verdict(rate >= 9_500.0)
        );
        println!(
            "  gateway CPU: {:.1}% of one core [{}] (target < 20%)",
            g.cpu * 100.0,
            verdict(g.cpu < 0.20)
        );
        println!(
            "  gateway RSS: {} KiB polling, {idle_rss} KiB idle: +{grow_kib} KiB [{}] (target < 2048 KiB more)",
            g.rss,
            verdict(grow_kib < 2048)
        );
        println!(
            "    of which heap and stacks (RssAnon): {} KiB polling, {idle_anon} KiB idle: +{} KiB; the rest is program pages",
            g.anon,
            g.anon.saturating_sub(idle_anon)
        );
        println!(
            "  CPU per reading: gateway {:.2} µs, plain loop {:.2} µs, ratio {ratio:.2} [{}] (target ≤ 1.5)",
            cpu_per * 1e6,
            plain_per * 1e6,
            verdict(ratio <= 1.5)
        );
        let sched_per = g.sched_cpu / rate.max(1.0);
        let sched_ratio = sched_per / sched_plain.max(f64::MIN_POSITIVE);
        println!(
            "    from the scheduler's nanoseconds: gateway {:.3} µs ({:.2}% of one core), plain loop {:.3} µs ({:.2}%), ratio {sched_ratio:.2} [{}]; threads ended in the window: {} / {}",
            sched_per * 1e6,
            g.sched_cpu * 100.0,
            sched_plain * 1e6,
            p.sched_cpu * 100.0,
            verdict(sched_ratio <= 1.5),
            g.threads_ended,
            p.threads_ended
        );
        let adjacent = sched_per_value(before);
        let adjacent_ratio = sched_per / adjacent.max(f64::MIN_POSITIVE);
        println!(
            "    against the plain loop's window just before this one: plain loop {:.3} µs, ratio {adjacent_ratio:.2} [{}]",
            adjacent * 1e6,
            verdict(adjacent_ratio <= 1.5),
        );
        let carried = if per_message == 0 {
            r.wire.readings
        } else {
            r.wire.messages * per_message
        };
        let per_reading = r.wire.bytes as f64 / carried.max(1) as f64;
        let filter = if per_message == 0 || payload.contains("Sparkplug") {
            "spBv1.0/#, DDATA only"
        } else {
            "bench/#"
        };
        println!(
            "  on the wire (QoS 0 subscriber to {filter}, {WIRE_SECS} s): {} messages, {} bytes, carrying {carried} readings (the gateway counted {} in the window): {per_reading:.1} bytes per reading{}",
            r.wire.messages,
            r.wire.bytes,
            r.wire.readings,
            if per_message == 0 { " polled" } else { "" },
        );
        summary.push(format!(
            "{payload} {sched_ratio:.2} ({:.3} µs; {adjacent_ratio:.2} against the adjacent window), {per_reading:.1} B",
            sched_per * 1e6
        ));
    }
    println!(
        "summary, CPU per reading / plain loop (scheduler ns) and bytes on the wire per reading: {}; plain loop {:.3} µs (issue 27 target: per_device and Sparkplug DDATA ≤ 1.5)",
        summary.join("; "),
        sched_plain * 1e6
    );
}
