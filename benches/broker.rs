//! Benchmark: fieldgate's embedded broker (the real release binary, no
//! devices) against a mosquitto started here, in the same run, driven by the
//! same clients on loopback: the stock mosquitto clients (`mosquitto_pub -l`
//! fed from a pipe, `mosquitto_sub` printing one line per message) and
//! rumqttc (TCP_NODELAY).
//!
//! `cargo bench --bench broker` prints, as fieldgate/mosquitto ratios with
//! the targets and PASS/MISS next to them:
//! - resident memory (VmRSS) of each broker idle, with 100 idle
//!   connections, and after a 200,000-message QoS 0 burst;
//! - throughput: messages delivered per second at the subscribers with
//!   unthrottled publishers (1→1 at QoS 0 and 1, 10→1, 1→10), each with
//!   the clients at MQTT 3.1.1 and at MQTT 5, plus a shared subscription of
//!   4 members at MQTT 5 (QoS 1, each message once among them);
//! - latency p50/p99 (publish to delivery, from a timestamp in the payload)
//!   of the same scenarios at a fixed 1,000 published messages/s.
//!
//! Deliveries are counted at the subscribers; a run that lost messages is
//! flagged `LOST n` and its number does not count. Scale the message counts
//! with `FG_BENCH_SCALE` (default 1.0).

#[path = "broker/clients.rs"]
mod clients;
#[path = "broker/procs.rs"]
mod procs;
#[path = "broker/run.rs"]
mod run;

use std::time::Duration;

use clients::Kind;
use procs::BrokerProc;
use rumqttc::QoS;
use run::{PAYLOAD, Run, Spec};

const IDLE_CONNECTIONS: usize = 100;
/// Published messages/s (all publishers together) in the latency runs.
const LATENCY_RATE: f64 = 1000.0;
/// `mosquitto_pub -l` at QoS >= 1 stops after 65,535 lines; leave room for
/// the warm-up lines.
const CLI_QOS1_MAX: usize = 60_000;

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Pass,
    Miss,
    /// mosquitto lost messages: nothing to compare with.
    NotApplicable,
}

impl Verdict {
    fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Miss }
    }
    /// A run with losses does not count: fieldgate's losses are a MISS,
    /// mosquitto's make the comparison void.
    fn runs(fg: &Run, mq: &Run, ok: bool) -> Verdict {
        if fg.lost() > 0 {
            Verdict::Miss
        } else if mq.lost() > 0 {
            Verdict::NotApplicable
        } else {
            Verdict::of(ok)
        }
    }
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::NotApplicable => "n/a",
        }
    }
}

fn lost(r: &Run) -> String {
    match r.lost() {
        0 => String::new(),
        n => format!(" LOST {n}"),
    }
}

fn scale() -> f64 {
    std::env::var("FG_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn n(base: usize) -> usize {
    ((base as f64 * scale()) as usize).max(10)
}

/// The four scenarios, and a shared subscription at MQTT 5; `rate` None
/// for throughput, Some for latency.
fn scenarios(kind: Kind, rate: Option<f64>) -> Vec<Spec> {
    let s = |name, pubs, subs, total: usize, qos| Spec {
        name,
        pubs,
        subs,
        per_pub: (total / pubs).max(1),
        qos,
        rate,
        shared: false,
    };
    let (q0, q1) = (QoS::AtMostOnce, QoS::AtLeastOnce);
    let mut qos1 = n(if rate.is_some() { 3_000 } else { 30_000 });
    if kind.is_cli() {
        qos1 = qos1.min(CLI_QOS1_MAX);
    }
    let (one, fan_in, fan_out) = match rate {
        Some(_) => (n(3_000), n(3_000), n(3_000)),
        None => (n(100_000), n(100_000), n(10_000)),
    };
    let mut all = vec![
        s("1 -> 1, QoS 0", 1, 1, one, q0),
        s("1 -> 1, QoS 1", 1, 1, qos1, q1),
        s("10 -> 1, QoS 0", 10, 1, fan_in, q0),
        s("1 -> 10, QoS 0", 1, 10, fan_out, q0),
    ];
    if kind.is_v5() {
        all.push(Spec {
            shared: true,
            ..s("1 -> share of 4", 1, 4, qos1, q1)
        });
    }
    all
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Prints the memory table; returns the verdicts.
async fn memory(mq: &mut BrokerProc, fg: &mut BrokerProc) -> Vec<Verdict> {
    settle(1000).await;
    let idle = [mq.rss_kib(), fg.rss_kib()];
    let mut anon = vec![("idle", [mq.anon_kib(), fg.anon_kib()])];
    let mut conns = [0; 2];
    let mut anon_conns = [0; 2];
    for (i, b) in [&*mq, &*fg].into_iter().enumerate() {
        let open = procs::idle_connections(b.port, IDLE_CONNECTIONS).await;
        settle(500).await; // let the broker settle before sampling
        conns[i] = b.rss_kib();
        anon_conns[i] = b.anon_kib();
        drop(open);
        settle(300).await;
    }
    anon.push(("100 idle connections", anon_conns));
    let burst_n = n(200_000);
    let mut burst = [0; 2];
    let mut anon_burst = [0; 2];
    let mut burst_note = String::new();
    for (i, b) in [&*mq, &*fg].into_iter().enumerate() {
        let spec = Spec {
            name: "burst",
            pubs: 1,
            subs: 1,
            per_pub: burst_n,
            qos: QoS::AtMostOnce,
            rate: None,
            shared: false,
        };
        let r = run::run(Kind::Rumqttc, b.port, &format!("burst-{}", b.name), spec).await;
        settle(1000).await;
        burst[i] = b.rss_kib();
        anon_burst[i] = b.anon_kib();
        burst_note += &format!(
            "  {}: {}/{} delivered{}",
            b.name,
            r.delivered,
            r.expected,
            lost(&r)
        );
    }
    mq.check_alive();
    fg.check_alive();
    println!("\nresident memory (VmRSS, KiB; MiB = 1024 KiB)");
    println!(
        "{:<34} {:>10} {:>10} {:>7} {:>10}  target",
        "state", "mosquitto", "fieldgate", "fg/mq", "fg-mq"
    );
    let rows = [
        ("idle", idle, 1),
        ("100 idle connections", conns, 1),
        ("after a 200000-msg QoS 0 burst", burst, 4),
    ];
    let mut out = Vec::new();
    for (name, [m, f], plus_mib) in rows {
        let v = Verdict::of(f <= m + plus_mib * 1024);
        let name = name.replace("200000", &burst_n.to_string());
        println!(
            "{:<34} {:>10} {:>10} {:>6.2}x {:>+6.1} MiB  <= mosquitto + {plus_mib} MiB  {}",
            name,
            m,
            f,
            f as f64 / m.max(1) as f64,
            (f as f64 - m as f64) / 1024.0,
            v.label()
        );
        out.push(v);
    }
    println!("burst (rumqttc, 1 -> 1):{burst_note}");
    anon.push(("after the burst", anon_burst));
    let anon: Vec<String> = anon
        .iter()
        .map(|(name, [m, f])| {
            format!(
                "{name} {m} / {f} ({:+.1} MiB)",
                (*f as f64 - *m as f64) / 1024.0
            )
        })
        .collect();
    println!(
        "RssAnon (heap and stacks, without mapped program files), mosquitto / fieldgate KiB: {}",
        anon.join(", ")
    );
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fg = procs::start_fieldgate(dir.path());
    let mut mq = procs::start_mosquitto(dir.path());
    println!(
        "broker benchmark: fieldgate (release binary) vs {}; {PAYLOAD}-byte payloads, loopback, FG_BENCH_SCALE={}",
        procs::mosquitto_version(),
        scale()
    );
    let mut verdicts = memory(&mut mq, &mut fg).await;

    println!(
        "\nthroughput: messages delivered per second at the subscribers, publishers unthrottled"
    );
    println!(
        "{:<20} {:<16} {:>22} {:>22} {:>7}  target",
        "client", "scenario", "mosquitto msg/s", "fieldgate msg/s", "fg/mq"
    );
    for kind in Kind::ALL {
        for (i, s) in scenarios(kind, None).into_iter().enumerate() {
            let m = run::run(kind, mq.port, &format!("t{i}mq"), s).await;
            let f = run::run(kind, fg.port, &format!("t{i}fg"), s).await;
            let ratio = f.rate() / m.rate();
            let v = Verdict::runs(&f, &m, ratio >= 1.0);
            println!(
                "{:<20} {:<16} {:>22} {:>22} {:>6.2}x  >= 1.00x  {}",
                kind.label(),
                s.name,
                format!("{:.0}{}", m.rate(), lost(&m)),
                format!("{:.0}{}", f.rate(), lost(&f)),
                ratio,
                v.label()
            );
            verdicts.push(v);
        }
    }
    mq.check_alive();
    fg.check_alive();

    println!(
        "\nlatency: publish -> delivery in ms, p50 / p99, at {LATENCY_RATE:.0} published msg/s (all publishers together)"
    );
    println!(
        "{:<20} {:<16} {:>22} {:>22} {:>9}  target",
        "client", "scenario", "mosquitto p50 / p99", "fieldgate p50 / p99", "p99 fg/mq"
    );
    for kind in Kind::ALL {
        for (i, s) in scenarios(kind, Some(LATENCY_RATE)).into_iter().enumerate() {
            let m = run::run(kind, mq.port, &format!("l{i}mq"), s).await;
            let f = run::run(kind, fg.port, &format!("l{i}fg"), s).await;
            let cell = |r: &Run| format!("{:.2} / {:.2}{}", r.pct_ms(0.5), r.pct_ms(0.99), lost(r));
            let ratio = f.pct_ms(0.99) / m.pct_ms(0.99);
            let v = Verdict::runs(&f, &m, f.pct_ms(0.99) <= m.pct_ms(0.99));
            println!(
                "{:<20} {:<16} {:>22} {:>22} {:>8.2}x  <= 1.00x  {}",
                kind.label(),
                s.name,
                cell(&m),
                cell(&f),
                ratio,
                v.label()
            );
            verdicts.push(v);
        }
    }
    mq.check_alive();
    fg.check_alive();

    let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
    println!(
        "\ntargets: {} PASS, {} MISS, {} n/a (mosquitto lost messages); RSS at the end: mosquitto {} KiB, fieldgate {} KiB",
        count(Verdict::Pass),
        count(Verdict::Miss),
        count(Verdict::NotApplicable),
        mq.rss_kib(),
        fg.rss_kib()
    );
}
