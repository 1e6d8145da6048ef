//! Outbox and drain benchmarks, against mosquitto in the same run.
//!
//! Run: `cargo bench --bench outbox` (needs `mosquitto` on the PATH).
//!
//! 1. Durable outbox writes: 100-byte QoS 1 messages committed per second
//!    through the bridge's writer (group commit, shipped `synchronous`),
//!    beside bare batched SQLite inserts of the same rows (the ceiling).
//! 2. Drain: a 100,000-message backlog sent into mosquitto by the bridge,
//!    beside a plain rumqttc QoS 1 publisher into the same mosquitto
//!    (`BENCH_QOS=2`: both at QoS 2, where each PUBREC is also committed
//!    to the outbox before the PUBREL goes).
//! 3. Resident memory of the real binary with 1,000,000 messages in the
//!    outbox, beside the same binary with an empty outbox.
//! 4. Wear: bytes written to the device per forwarded message and fsyncs
//!    per second at 1,000 msg/s with the uplink up (`outbox/wear.rs`).
//! 5. The MQTT 5 uplink (`BENCH_ONLY=drain5`, `outbox/v5.rs`): its drain
//!    beside a plain rumqttc v5 publisher, and bytes on the wire per
//!    forwarded reading with topic aliases and without.
//!
//! Wear of the real binary per reading (`scripts/wear.sh BINARY RATE 20`:
//! 10 simulated devices, every reading forwarded at QoS 1 to mosquitto,
//! `/proc/PID/io` `write_bytes` over 20 s, fsyncs from `strace -c -f`;
//! 2026-12-06, debug build, shared 2-core machine), bytes/reading and
//! fsyncs/s:
//!
//! | readings/s | before (ff69db5) | `commit_window: 500ms` (default) |
//! |---|---|---|
//! | 10    | 16,536, 9.8/s  | 2,565-2,652, 2.0/s   |
//! | 100   | 1,985, 9.9/s   | 817-855, 2.0/s       |
//! | 1,000 | 1,964, 109.6/s | 240-252, 2.7-2.9/s   |
//!
//! (the window alone: 2,589, 739, 237; the incremental vacuum adds a
//! page per commit). The release binary, after: 2,645 / 776 / 246 bytes
//! and 2.0 / 2.0 / 2.8 fsyncs/s; `write_behind: 1s`: 0.
//!
//! With `write_behind: 1s` and the uplink up: 0 bytes/reading and no
//! fsync at 10, 100 and 1,000 readings/s (same command, fourth argument
//! `"write_behind: 1s"`).

#[path = "outbox/mosquitto.rs"]
mod mosquitto;
#[path = "outbox/v5.rs"]
mod v5;
#[path = "outbox/wear.rs"]
mod wear;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fieldgate::bridge::config::{BufferConfig, Synchronous};
use fieldgate::bridge::outbox::{self, Commit, NewMessage, WriteCmd};
use fieldgate::bridge::{Bridge, Counters, UplinkConfig};
use mosquitto::{Mosquitto, free_port};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};

const WRITES: usize = 300_000;
const BACKLOG: usize = 100_000;
const RESIDENT: usize = 1_000_000;

/// The QoS of the drain's backlog and of the plain publisher (`BENCH_QOS`).
fn bench_qos() -> u8 {
    match std::env::var("BENCH_QOS").as_deref() {
        Ok("2") => 2,
        _ => 1,
    }
}

fn msg(i: usize) -> NewMessage {
    let mut payload = format!("{{\"value\":{i},\"ts\":1763773200123,\"quality\":\"good\"}}");
    while payload.len() < 100 {
        payload.push(' ');
    }
    NewMessage {
        topic: "site/gw1/dev/n".to_string(),
        payload: Bytes::from(payload),
        qos: bench_qos(),
        retain: false,
        expiry_s: 0,
        props: None,
    }
}

fn big_buffer() -> BufferConfig {
    BufferConfig {
        max_messages: 100_000_000,
        max_bytes: fieldgate::config::ByteSize(1 << 40),
        ..BufferConfig::default()
    }
}

/// Commits `n` messages through the writer, `per_cmd` per command.
async fn writer_fill(dir: &Path, n: usize, per_cmd: usize) -> Duration {
    let (_pool, conn) = outbox::open(dir, Synchronous::Full).await.expect("open");
    let counters = Arc::new(Counters::default());
    let (writer, _committed) = outbox::Writer::new(conn, big_buffer(), counters.clone())
        .await
        .expect("writer");
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(writer.run(rx));
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let k = per_cmd.min(n - i);
        let msgs = (i..i + k).map(msg).collect();
        tx.send(WriteCmd::Insert {
            msgs,
            done: None,
            commit: Commit::Now,
        })
        .await
        .expect("send");
        i += k;
    }
    let (done, wait) = oneshot::channel();
    tx.send(WriteCmd::Insert {
        msgs: Vec::new(),
        done: Some(done),
        commit: Commit::Now,
    })
    .await
    .expect("send");
    wait.await.expect("committed");
    let took = t.elapsed();
    drop(tx);
    task.await.expect("writer end");
    assert_eq!(counters.committed.load(Relaxed), n as u64);
    took
}

/// The ceiling: the same rows in transactions of 8192, multi-row INSERTs.
async fn bare_inserts(dir: &Path, n: usize) -> Duration {
    let (_pool, mut conn) = outbox::open(dir, Synchronous::Full).await.expect("open");
    let rows: Vec<NewMessage> = (0..n).map(msg).collect();
    let t = Instant::now();
    for batch in rows.chunks(8192) {
        let mut tx = conn.begin().await.expect("begin");
        for chunk in batch.chunks(64) {
            let sql = format!(
                "INSERT INTO outbox (topic, payload, qos, retain, created_ms, size) VALUES {}",
                vec!["(?,?,?,?,?,?)"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for m in chunk {
                q = q
                    .bind(m.topic.as_str())
                    .bind(m.payload.as_ref())
                    .bind(1i64)
                    .bind(0i64)
                    .bind(0i64)
                    .bind(m.size() as i64);
            }
            q.execute(&mut *tx).await.expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    t.elapsed()
}

fn uplink(port: u16) -> UplinkConfig {
    uplink_with(port, "")
}

/// [`uplink`] with `extra` lines (e.g. `protocol: 5`).
fn uplink_with(port: u16, extra: &str) -> UplinkConfig {
    let yaml = format!(
        "{extra}url: mqtt://127.0.0.1:{port}\nclient_id: bench-gw\nforward: [{{ filter: \"gw1/#\", prefix: \"site/\", qos: {} }}]\n\
         buffer: {{ max_messages: 100000000, max_bytes: 1TiB{} }}\n{}",
        bench_qos(),
        std::env::var("BENCH_COMMIT_WINDOW")
            .map(|w| format!(", commit_window: {w}"))
            .unwrap_or_default(),
        std::env::var("BENCH_INFLIGHT")
            .map(|n| format!("inflight: {n}\n"))
            .unwrap_or_default()
    );
    serde_yaml_ng::from_str(&yaml).expect("uplink yaml")
}

/// A fresh outbox holding a [`BACKLOG`].
async fn backlog() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    writer_fill(d.path(), BACKLOG, 4096).await;
    d
}

/// The time from the bridge's start (opening the outbox, connecting, the
/// session wipe) until every backlog message was acknowledged, and the
/// part of it from the first PUBLISH on.
async fn bridge_drain(dir: &Path, port: u16) -> (Duration, Duration) {
    bridge_drain_with(dir, uplink(port)).await
}

/// [`bridge_drain`] with the uplink config `cfg`.
async fn bridge_drain_with(dir: &Path, cfg: UplinkConfig) -> (Duration, Duration) {
    let (_keep_tx, rx) = mpsc::channel(16);
    let t = Instant::now();
    let (bridge, _local) = Bridge::start(&cfg, "gw1", dir, rx, 1024, None)
        .await
        .expect("bridge");
    let mut first_sent = None;
    while bridge.counters.acked.load(Relaxed) < BACKLOG as u64 {
        if first_sent.is_none() && bridge.counters.sent.load(Relaxed) > 0 {
            first_sent = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t.elapsed();
    let draining = first_sent.map_or(took, |f| f.elapsed());
    drop(_keep_tx);
    bridge.stop(Duration::from_secs(5)).await;
    (took, draining)
}

async fn plain_rumqttc(port: u16, inflight: u16) -> Duration {
    let mut o = MqttOptions::new("bench-plain", "127.0.0.1", port);
    o.set_inflight(inflight);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1024);
    let payload = msg(0).payload;
    let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(bench_qos() == 2)];
    let t = Instant::now();
    tokio::spawn(async move {
        for _ in 0..BACKLOG {
            client
                .publish_bytes("site/gw1/dev/n", qos, false, payload.clone())
                .await
                .expect("publish");
        }
        // keep the client (and the request channel) alive until the end
        std::future::pending::<()>().await;
    });
    let mut acks = 0;
    while acks < BACKLOG {
        if let Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_)) =
            el.poll().await.expect("poll")
        {
            acks += 1;
        }
    }
    t.elapsed()
}

/// CPU time (user + system) of a process so far, from /proc.
fn cpu_ms(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // fields after the command name (which is in parentheses)
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks * 10 // USER_HZ is 100 on Linux
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// RSS of the real binary, settled, with `data_dir` as its data folder and
/// the uplink down.
fn binary_rss(dir: &Path) -> u64 {
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway: {{ id: gw1, data_dir: \"{}\" }}\nbroker: {{ listen: \"127.0.0.1:{}\" }}\n\
             uplink:\n  url: mqtt://127.0.0.1:{}\n  forward: [{{ filter: \"gw1/#\", prefix: \"site/\" }}]\n  \
             buffer: {{ max_messages: 100000000, max_bytes: 1TiB }}\n",
            dir.join("data").display(),
            free_port(),
            free_port()
        ),
    )
    .expect("config");
    let log = dir.join("gw.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("fieldgate");
    std::thread::sleep(Duration::from_secs(4));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rss
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("fieldgate outbox benchmarks (synchronous = full, WAL)\n");
    // BENCH_ONLY=writes|drain|memory|wear runs one part; =profile the bridge
    // drain alone (BENCH_INFLIGHT=N overrides the window)
    let only = std::env::var("BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);

    if part("writes") {
        let a = tempfile::tempdir().expect("tempdir");
        let single = writer_fill(a.path(), WRITES, 1).await;
        let b = tempfile::tempdir().expect("tempdir");
        let batched = writer_fill(b.path(), WRITES, 256).await;
        let c = tempfile::tempdir().expect("tempdir");
        let bare = bare_inserts(c.path(), WRITES).await;
        let rate = |d: Duration| WRITES as f64 / d.as_secs_f64();
        println!("durable outbox writes, {WRITES} x 100-byte QoS 1 messages");
        println!(
            "  writer, one message per command : {:>10.0} msg/s",
            rate(single)
        );
        println!(
            "  writer, 256 messages per command: {:>10.0} msg/s",
            rate(batched)
        );
        println!(
            "  bare batched inserts (ceiling)  : {:>10.0} msg/s",
            rate(bare)
        );
        println!(
            "  ratio to ceiling: {:.2} (one per command), {:.2} (batched); target 150000/s and >= 0.50\n",
            rate(single) / rate(bare),
            rate(batched) / rate(bare)
        );
    }
    if only.as_deref() == Some("profile") {
        // the bridge drain alone, three times over, for `perf record`
        let mosq = Mosquitto::start();
        for _ in 0..3 {
            let (t, _) = bridge_drain(backlog().await.path(), mosq.1).await;
            println!(
                "bridge drain: {:.0} msg/s",
                BACKLOG as f64 / t.as_secs_f64()
            );
        }
        return;
    }
    if part("drain") {
        let mosq = Mosquitto::start();
        let d = backlog().await;
        let mpid = mosq.0.id().to_string();
        let cpu = || (cpu_ms("self"), cpu_ms(&mpid));
        let c0 = cpu();
        let (drain, draining) = bridge_drain(d.path(), mosq.1).await;
        let c1 = cpu();
        let inflight = uplink(mosq.1).inflight;
        let plain = plain_rumqttc(mosq.1, inflight).await;
        let c2 = cpu();
        let r = |t: Duration| BACKLOG as f64 / t.as_secs_f64();
        println!(
            "drain of a {BACKLOG}-message backlog into mosquitto (QoS {}, in-flight {inflight}, the default)",
            bench_qos()
        );
        println!(
            "  bridge, from start      : {:>10.0} msg/s ({} ms to open the outbox, connect and send the first)",
            r(drain),
            (drain - draining).as_millis()
        );
        println!("  bridge, from first send : {:>10.0} msg/s", r(draining));
        println!(
            "  plain rumqttc publisher : {:>10.0} msg/s (connect included)",
            r(plain)
        );
        println!(
            "  ratio: {:.2} from start, {:.2} from first send (target >= 0.80)",
            r(drain) / r(plain),
            r(draining) / r(plain)
        );
        println!(
            "  CPU ms (this process / mosquitto): bridge {} / {}, plain {} / {}\n",
            c1.0 - c0.0,
            c1.1 - c0.1,
            c2.0 - c1.0,
            c2.1 - c1.1
        );
    }
    if part("drain5") {
        v5::run().await;
    }
    if part("wear") {
        let mosq = Mosquitto::start();
        wear::wear(uplink(mosq.1)).await;
    }
    if part("memory") {
        let idle = tempfile::tempdir().expect("tempdir");
        let full = tempfile::tempdir().expect("tempdir");
        writer_fill(&full.path().join("data"), RESIDENT, 8192).await;
        let idle_rss = tokio::task::spawn_blocking({
            let p = idle.path().to_path_buf();
            move || binary_rss(&p)
        })
        .await
        .expect("rss");
        let full_rss = tokio::task::spawn_blocking({
            let p = full.path().to_path_buf();
            move || binary_rss(&p)
        })
        .await
        .expect("rss");
        println!("resident memory of `fieldgate run` (uplink down)");
        println!("  empty outbox        : {:>8} KiB", idle_rss);
        println!("  {RESIDENT} messages: {:>8} KiB", full_rss);
        println!(
            "  difference: {:.1} MiB (target <= 10 MiB)",
            (full_rss as f64 - idle_rss as f64) / 1024.0
        );
    }
}
