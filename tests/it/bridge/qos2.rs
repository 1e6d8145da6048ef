//! QoS 2 through the bridge: no duplicates across uplink outages, nor
//! across a SIGKILL (each row's packet id is a function of its row id and a
//! row is marked released before its PUBREL; the session is resumed from
//! the first connection), also mixed with QoS 1 at a full window.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rumqttc::QoS;

use crate::bridge::{
    SECS, collect_until, local_values, publish_all_qos, wait_local_value, wait_reading,
    wait_upstream,
};
use crate::support::{ConfigDir, Gateway, Sub, fill};
use crate::upstream::{Mosquitto, Proxy, gateway_yaml_from};

/// The in-flight window of these tests.
const WINDOW: usize = 100;

fn qos2_yaml(url: &str, start: i64) -> String {
    gateway_yaml_from(
        url,
        "5ms",
        start,
        "gw1/dev/#",
        &format!("  inflight: {WINDOW}"),
    )
    .replace("qos: 1 }", "qos: 2 }")
}

fn duplicates(got: &[i64]) -> usize {
    got.len() - got.iter().collect::<BTreeSet<_>>().len()
}

#[tokio::test]
async fn qos2_outages_cause_no_duplicates() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::ExactlyOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut gw = Gateway::start(&qos2_yaml(&url, 0));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    wait_reading(&mut up).await;
    let mut seen = BTreeSet::new();
    for round in 1..=3 {
        proxy.cut();
        wait_local_value(&mut local, 150 * round, &mut seen).await;
        proxy.restore();
        wait_local_value(&mut local, 150 * round + 50, &mut seen).await;
        wait_upstream(&mut up, 150 * round + 50).await;
    }
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    assert_eq!(duplicates(&got), 0, "QoS 2 duplicated across outages");
}

#[tokio::test]
async fn qos2_is_not_duplicated_across_a_sigkill() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::ExactlyOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&qos2_yaml(&url, 0));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    wait_reading(&mut up).await;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 300, &mut seen).await;
    gw.signal(Signal::SIGKILL);
    let _ = gw.wait_exit(SECS);
    seen.extend(local_values(&mut local, Duration::from_millis(100)).await);
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    let data = cfg.dir.path().join("data");
    std::fs::write(&cfg.path, fill(&qos2_yaml(&url, 1_000_000), port, &data)).expect("config");
    drop(gw);
    let mut gw = Gateway::spawn(cfg, port, &[]);
    let mut want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    want.insert(1_000_010);
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    let old: Vec<i64> = got.iter().copied().filter(|v| *v < 1_000_000).collect();
    assert_eq!(duplicates(&old), 0, "QoS 2 duplicated across a SIGKILL");
    gw.wait_log("uplink connected session_present=true", SECS);
    assert!(gw.terminate(SECS).success());
}

/// The mixed test's window (small, so a backlog fills it at once).
const MIXED_WINDOW: usize = 20;
/// Messages per phase, every other one at QoS 2 upstream.
const PER_PHASE: usize = 600;

fn mixed_topic(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "gw1/mix/q1"
    } else {
        "gw1/mix/q2"
    }
}

/// What arrived upstream: (QoS 1 values, QoS 2 values), in arrival order.
async fn collect_mixed(up: &mut Sub, n: usize, gw: &Gateway) -> (Vec<usize>, Vec<usize>) {
    let (mut q1, mut q2) = (Vec::new(), Vec::new());
    let mut have = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // what the waits before took out first, in arrival order
    let mut early: std::collections::VecDeque<_> = up.seen.drain(..).collect();
    while have.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let next = match early.pop_front() {
            Some(m) => Some(m),
            None => up.try_next(left).await,
        };
        let Some(m) = next else {
            let missing: Vec<_> = (0..n).filter(|i| !have.contains(i)).take(20).collect();
            panic!(
                "upstream is missing {} of {n}, first {missing:?}; log:\n{}",
                n - have.len(),
                gw.log_text()
            );
        };
        let v: usize = m.text().parse().expect("a sequence number");
        assert_eq!(
            format!("site/{}", mixed_topic(v)),
            m.topic,
            "{v} on the wrong topic"
        );
        let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][v % 2];
        assert_eq!(m.qos, qos, "{v} forwarded at the wrong QoS");
        have.insert(v);
        if v.is_multiple_of(2) {
            q1.push(v)
        } else {
            q2.push(v)
        }
    }
    (q1, q2)
}

/// Issue 13 item 5: a 50/50 mix of QoS 1 and QoS 2 at a full in-flight
/// window, through two outages and a SIGKILL: every message the local
/// broker acknowledged arrives upstream, no QoS 2 message twice.
#[tokio::test]
async fn mixed_qos_at_a_full_window_through_outages_and_a_sigkill() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start_slow(broker.port, Duration::from_millis(10)).await;
    let mut up = Sub::connect(broker.port, &["site/gw1/mix/#"], QoS::ExactlyOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let extra = format!(
        "    - {{ filter: \"gw1/mix/q1\", prefix: \"site/\", qos: 1 }}\n    \
         - {{ filter: \"gw1/mix/q2\", prefix: \"site/\", qos: 2 }}\n  inflight: {MIXED_WINDOW}"
    );
    let yaml = gateway_yaml_from(&url, "1s", 0, "gw1/dev/#", &extra);
    // outage 1: the uplink is down while the first phase is published
    proxy.cut();
    let gw = Gateway::start(&yaml);
    // published locally at the QoS they are forwarded at
    let msgs = |r: std::ops::Range<usize>| {
        r.map(|i| {
            let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][i % 2];
            (mixed_topic(i).to_string(), i.to_string().into_bytes(), qos)
        })
        .collect::<Vec<_>>()
        .into_iter()
    };
    publish_all_qos(gw.port, "mix-a", msgs(0..PER_PHASE), SECS * 6).await;
    proxy.restore();
    // a backlog of hundreds behind a window of 20: the window is full
    // when the gateway is killed, in both QoS
    for _ in 0..3 * MIXED_WINDOW {
        let m = up.next(SECS * 2).await;
        up.seen.push(m);
    }
    let mut gw = gw.sigkill_and_restart(&[]);
    // the first connection of the new process resumes the session
    gw.wait_log("uplink connected session_present=true", SECS);
    // outage 2, during the drain, while the second phase is published
    let m = up.next(SECS * 2).await;
    up.seen.push(m);
    proxy.cut();
    publish_all_qos(gw.port, "mix-b", msgs(PER_PHASE..2 * PER_PHASE), SECS * 6).await;
    proxy.restore();
    let (q1, q2) = collect_mixed(&mut up, 2 * PER_PHASE, &gw).await;
    let (d1, d2) = (dups(&q1), dups(&q2));
    eprintln!(
        "mixed QoS at a window of {MIXED_WINDOW}: QoS 1 duplicates {d1}, QoS 2 duplicates {d2}"
    );
    assert_eq!(
        d2,
        0,
        "QoS 2 duplicated: {:?}\n{}",
        repeated(&q2),
        gw.log_text()
    );
    assert!(d1 <= 2 * MIXED_WINDOW, "{d1} QoS 1 duplicates");
    assert!(gw.terminate(SECS).success());
}

fn repeated(got: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    got.iter().copied().filter(|v| !seen.insert(*v)).collect()
}

fn dups(got: &[usize]) -> usize {
    got.len() - got.iter().collect::<BTreeSet<_>>().len()
}
