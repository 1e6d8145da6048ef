//! Modbus polling benchmark: the real release binary polls 10 Modbus TCP
//! devices × 100 points every 100 ms, served by tokio-modbus servers in
//! this process; in the same run a plain tokio-modbus client loop (its own
//! process) does the same reads.
//!
//! Run: `cargo bench --bench modbus` (`FG_BENCH_SECS=N` sets the measured
//! window, default 10 s).
//!
//! Prints: requests per poll cycle seen by the servers beside the merged
//! plan, readings/s (the gateway's `fieldgate_readings_total`), the CPU
//! share of one core and the resident memory of the gateway (and of the
//! idle gateway with no devices), and the plain loop's CPU per reading.
//! CPU is read twice: from `/proc/<pid>/stat` (10 ms ticks: the loop's
//! 0.3-0.6% of a core over 10 s is only 3-6 ticks, so its figure moves by
//! a third with one tick) and from each thread's
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds; a thread that ends
//! inside the window loses its share, and the line says how many did).
//! Targets (issue 15): 10,000 readings/s, under 20% of one core, under
//! 2 MB more RSS than the idle gateway, CPU per reading ≤ 1.5 × the loop's.
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
        self.0.fetch_add(1, Ordering::Relaxed);
        let r = match req.request {
            Request::ReadHoldingRegisters(a, n) if u32::from(a) + u32::from(n) <= 1000 => {
                Ok(Some(Response::ReadHoldingRegisters((a..a + n).collect())))
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
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(dir: &std::path::Path, devices: &str) -> (Proc, u16, std::path::PathBuf) {
    let (port, metrics) = (free_port(), free_port());
    let cfg = dir.join(format!("fieldgate-{port}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  id: bench\n  data_dir: \"{}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\nmetrics:\n  listen: \"127.0.0.1:{metrics}\"\ndevices:{devices}",
            dir.join(format!("data-{port}")).display()
        ),
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
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
    (Proc(child), metrics, cfg)
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
    let (idle, _, _) = gateway(dir.path(), " []\n");
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_kib(idle.0.id());
    let idle_anon = status_kib(idle.0.id(), "RssAnon:");
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
    let (gw, metrics, cfg) = gateway(dir.path(), &devices);
    let plan = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("fieldgate check");
    let plan = String::from_utf8_lossy(&plan.stdout);
    let planned: u64 = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("requests per poll: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    std::thread::sleep(Duration::from_secs(3));
    let r0 = readings(metrics);
    let g = measure(gw.0.id(), &counts, secs);
    let got = readings(metrics) - r0;
    drop(gw);

    let plain = Proc(
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
    );
    std::thread::sleep(Duration::from_secs(2));
    let p = measure(plain.0.id(), &counts, secs);
    drop(plain);

    let cycles = g.secs / POLL.as_secs_f64();
    let per_cycle = g.requests as f64 / cycles;
    let rate = got as f64 / g.secs;
    let plain_rate = p.requests as f64 * f64::from(POINTS) / p.secs;
    let cpu_per = g.cpu / rate.max(1.0);
    let plain_per = p.cpu / plain_rate.max(1.0);
    let ratio = cpu_per / plain_per.max(f64::MIN_POSITIVE);
    let grow_kib = g.rss.saturating_sub(idle_rss);
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "modbus benchmark: {DEVICES} TCP devices × {POINTS} points every {POLL:?}, {secs} s windows, loopback, 2 shared cores"
    );
    println!(
        "requests per cycle: {per_cycle:.2} seen by the servers; merged plan {planned} (one per point: {})",
        DEVICES as u64 * u64::from(POINTS)
    );
    println!(
        "readings/s: {rate:.0} [{}] (target 10000)",
        verdict(rate >= 9_500.0)
    );
    println!(
        "gateway CPU: {:.1}% of one core [{}] (target < 20%)",
        g.cpu * 100.0,
        verdict(g.cpu < 0.20)
    );
    println!(
        "gateway RSS: {} KiB polling, {idle_rss} KiB idle: +{grow_kib} KiB [{}] (target < 2048 KiB more)",
        g.rss,
        verdict(grow_kib < 2048)
    );
    println!(
        "  of which heap and stacks (RssAnon): {} KiB polling, {idle_anon} KiB idle: +{} KiB; the rest is program pages",
        g.anon,
        g.anon.saturating_sub(idle_anon)
    );
    println!(
        "plain tokio-modbus loop: {plain_rate:.0} values/s, CPU {:.1}% of one core, RSS {} KiB",
        p.cpu * 100.0,
        p.rss
    );
    println!(
        "CPU per reading: gateway {:.2} µs, plain loop {:.2} µs, ratio {ratio:.2} [{}] (target ≤ 1.5)",
        cpu_per * 1e6,
        plain_per * 1e6,
        verdict(ratio <= 1.5)
    );
    let sched_per = g.sched_cpu / rate.max(1.0);
    let sched_plain = p.sched_cpu / plain_rate.max(1.0);
    let sched_ratio = sched_per / sched_plain.max(f64::MIN_POSITIVE);
    println!(
        "  from the scheduler's nanoseconds: gateway {:.3} µs ({:.2}% of one core), plain loop {:.3} µs ({:.2}%), ratio {sched_ratio:.2} [{}]; threads ended in the window: {} / {}",
        sched_per * 1e6,
        g.sched_cpu * 100.0,
        sched_plain * 1e6,
        p.sched_cpu * 100.0,
        verdict(sched_ratio <= 1.5),
        g.threads_ended,
        p.threads_ended
    );
}
