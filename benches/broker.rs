//! Benchmark: fieldgate's embedded broker (the real release binary, no
//! devices) against a mosquitto started here, in the same run, with the same
//! client code (rumqttc, TCP_NODELAY) on loopback.
//!
//! `cargo bench --bench broker` prints, per scenario and broker, messages/s
//! (deliveries per second at the subscribers), p50/p99 latency (publish to
//! delivery, measured under that load) and the ratio fieldgate/mosquitto;
//! then resident memory of each broker process with 100 idle connections.
//! Scale with `FG_BENCH_SCALE` (default 1.0).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAYLOAD: usize = 100;
const IDLE_CONNECTIONS: usize = 100;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A broker process under test; killed on drop.
struct BrokerProc {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, child: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name} exited early: {s}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} did not listen on {port}");
}

fn start_fieldgate(dir: &Path) -> BrokerProc {
    let port = free_port();
    let cfg = dir.join("fieldgate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  id: bench\n  data_dir: \"{}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\n  max_connections: 1000\ndevices: []\n",
            dir.join("data").display()
        ),
    )
    .expect("write fieldgate config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fieldgate");
    wait_port(port, &mut child, "fieldgate");
    BrokerProc {
        name: "fieldgate",
        child,
        port,
    }
}

fn start_mosquitto(dir: &Path) -> BrokerProc {
    let port = free_port();
    let cfg = dir.join("mosquitto.conf");
    std::fs::write(
        &cfg,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"),
    )
    .expect("write mosquitto config");
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mosquitto (apt-get install mosquitto)");
    wait_port(port, &mut child, "mosquitto");
    BrokerProc {
        name: "mosquitto",
        child,
        port,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    o
}

fn client(id: &str, port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let (c, mut el) = AsyncClient::new(options(id, port), 1000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    (c, el)
}

/// One scenario's result: deliveries, elapsed, latencies (µs, sorted).
struct Run {
    delivered: usize,
    expected: usize,
    elapsed: Duration,
    lat_us: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

/// `pubs` publishers send `per_pub` messages each to `subs` subscribers on one topic.
async fn scenario(port: u16, tag: &str, pubs: usize, subs: usize, per_pub: usize, qos: QoS) -> Run {
    let topic = format!("bench/{tag}");
    let expected = pubs * per_pub * subs;
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u64>, Instant)>();
    let mut ready = Vec::new();
    for s in 0..subs {
        let (c, mut el) = client(&format!("sub-{tag}-{s}"), port);
        c.subscribe(&topic, qos).await.expect("subscribe");
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        ready.push(rrx);
        let want = pubs * per_pub;
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _keep = c;
            let mut rtx = Some(rtx);
            let mut lat = Vec::with_capacity(want);
            let mut last = Instant::now();
            let idle = Duration::from_secs(3);
            loop {
                match tokio::time::timeout(idle, el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        if let Some(t) = rtx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let now = start().elapsed().as_nanos() as u64;
                        let sent = u64::from_be_bytes(p.payload[..8].try_into().expect("8 bytes"));
                        lat.push(now.saturating_sub(sent) / 1000);
                        last = Instant::now();
                        if lat.len() == want {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        eprintln!("subscriber error: {e}");
                        break;
                    }
                    Err(_) => break, // idle: the rest was lost
                }
            }
            let _ = done.send((lat.len(), lat, last));
        });
    }
    drop(done_tx);
    for r in ready {
        r.await.expect("subscriber ready");
    }
    let t0 = Instant::now();
    let mut pub_tasks = Vec::new();
    for p in 0..pubs {
        let (c, mut el) = client(&format!("pub-{tag}-{p}"), port);
        let driver = tokio::spawn(async move {
            loop {
                if el.poll().await.is_err() {
                    break;
                }
            }
        });
        let topic = topic.clone();
        pub_tasks.push(tokio::spawn(async move {
            for _ in 0..per_pub {
                let mut payload = vec![0u8; PAYLOAD];
                let now = start().elapsed().as_nanos() as u64;
                payload[..8].copy_from_slice(&now.to_be_bytes());
                c.publish(&topic, qos, false, payload)
                    .await
                    .expect("publish");
            }
            (c, driver)
        }));
    }
    let mut keep = Vec::new();
    for t in pub_tasks {
        keep.push(t.await.expect("publisher"));
    }
    let mut delivered = 0;
    let mut lat_us = Vec::with_capacity(expected);
    let mut end = t0;
    while let Some((n, lat, last)) = done_rx.recv().await {
        delivered += n;
        lat_us.extend(lat);
        end = end.max(last);
    }
    for (c, driver) in keep {
        let _ = c.disconnect().await;
        driver.abort();
    }
    lat_us.sort_unstable();
    Run {
        delivered,
        expected,
        elapsed: end - t0,
        lat_us,
    }
}

/// Opens `n` idle MQTT connections (raw CONNECT, CONNACK read) and returns them.
async fn idle_connections(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let id = format!("idle-{i:04}");
        let mut pkt = vec![
            0x10,
            (12 + id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            2,
            0,
            60,
        ];
        pkt.extend_from_slice(&(id.len() as u16).to_be_bytes());
        pkt.extend_from_slice(id.as_bytes());
        s.write_all(&pkt).await.expect("CONNECT");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.expect("CONNACK");
        assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
        out.push(s);
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    start();
    let scale: f64 = std::env::var("FG_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: usize| ((base as f64 * scale) as usize).max(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let fg = start_fieldgate(dir.path());
    let mq = start_mosquitto(dir.path());
    println!(
        "broker benchmark: fieldgate (embedded rumqttd) vs {} — 100-byte payloads, rumqttc clients, loopback",
        String::from_utf8_lossy(
            &Command::new("mosquitto")
                .arg("-h")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .lines()
        .next()
        .unwrap_or("mosquitto")
    );
    println!("\nresident memory with {IDLE_CONNECTIONS} idle connections");
    let mut mem = Vec::new();
    for b in [&mq, &fg] {
        let before = rss_kib(b.child.id());
        let conns = idle_connections(b.port, IDLE_CONNECTIONS).await;
        tokio::time::sleep(Duration::from_millis(500)).await; // let the broker settle before sampling
        let after = rss_kib(b.child.id());
        println!(
            "{:<10} RSS {:>7} KiB at start, {:>7} KiB with {IDLE_CONNECTIONS} idle connections",
            b.name, before, after
        );
        mem.push(after);
        drop(conns);
    }
    println!(
        "fieldgate - mosquitto: {:+.1} MiB (target: within 5 MiB)",
        (mem[1] as f64 - mem[0] as f64) / 1024.0
    );

    let scenarios: [(&str, usize, usize, usize, QoS); 4] = [
        ("1 pub -> 1 sub, QoS 0", 1, 1, n(100_000), QoS::AtMostOnce),
        ("1 pub -> 1 sub, QoS 1", 1, 1, n(30_000), QoS::AtLeastOnce),
        ("10 pubs -> 1 sub, QoS 0", 10, 1, n(10_000), QoS::AtMostOnce),
        ("1 pub -> 10 subs, QoS 0", 1, 10, n(10_000), QoS::AtMostOnce),
    ];
    println!(
        "\n{:<26} {:<10} {:>12} {:>10} {:>10} {:>12}",
        "scenario", "broker", "msgs/s", "p50 ms", "p99 ms", "delivered"
    );
    for (i, (name, pubs, subs, per_pub, qos)) in scenarios.into_iter().enumerate() {
        let mut rates = Vec::new();
        for b in [&mq, &fg] {
            let r = scenario(b.port, &format!("{i}{}", b.name), pubs, subs, per_pub, qos).await;
            println!(
                "{:<26} {:<10} {:>12.0} {:>10.2} {:>10.2} {:>7}/{}",
                name,
                b.name,
                r.rate(),
                r.pct(0.50),
                r.pct(0.99),
                r.delivered,
                r.expected
            );
            rates.push(r.rate());
        }
        println!("{:<26} {:<10} {:>12.2}x", "", "ratio", rates[1] / rates[0]);
    }

    println!(
        "\nRSS after the runs: mosquitto {} KiB, fieldgate {} KiB",
        rss_kib(mq.child.id()),
        rss_kib(fg.child.id())
    );
}
