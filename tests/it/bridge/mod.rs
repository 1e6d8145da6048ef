//! The store-and-forward bridge against a real upstream mosquitto, with
//! outages made by a TCP proxy, SIGKILL of the real binary, a broker
//! restart, capacity limits, TLS and commands from upstream.

mod ack;
mod backoff;
mod behind;
mod clock;
mod commands;
mod crash;
mod large;
mod link;
mod outbox_file;
mod pace;
mod poison;
mod policies;
mod qos2;
mod stop;

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rumqttc::QoS;

use crate::support::{ConfigDir, Gateway, Msg, Sub, fieldgate, options};
use crate::upstream::{Mosquitto, Proxy, counter, gateway_yaml, gateway_yaml_from};

pub(crate) const SECS: Duration = Duration::from_secs(10);
pub(crate) const READING: &str = "site/gw1/dev/n";

/// Collects upstream readings until every value in `want` arrived; returns
/// the values in arrival order (duplicates included).
pub(crate) async fn collect_until(
    up: &mut Sub,
    want: &BTreeSet<i64>,
    within: Duration,
    gw: &Gateway,
) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + within;
    // what earlier waits took out first, in arrival order
    let mut got: Vec<i64> = up
        .seen
        .drain(..)
        .filter(|m| m.topic == READING)
        .map(|m| counter(&m))
        .collect();
    let mut have: BTreeSet<i64> = got.iter().copied().collect();
    while !want.is_subset(&have) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = up.try_next(left).await else {
            let missing: Vec<_> = want.difference(&have).take(20).collect();
            let log = gw.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "upstream is missing {} values, first {missing:?}; got {}; log tail:\n{}",
                want.difference(&have).count(),
                got.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        };
        if m.topic == READING {
            let v = counter(&m);
            got.push(v);
            have.insert(v);
        }
    }
    got
}

/// Waits for a reading upstream and keeps it (in `seen`) for [`collect_until`].
pub(crate) async fn wait_reading(up: &mut Sub) -> i64 {
    let m = up.wait_topic(READING, SECS).await;
    let v = counter(&m);
    up.seen.push(m);
    v
}

/// Waits until upstream got a reading of at least `value` (so the uplink is
/// back); everything received stays in `seen` for [`collect_until`].
pub(crate) async fn wait_upstream(up: &mut Sub, value: i64) {
    let m = up
        .wait_for(Duration::from_secs(20), |m: &Msg| {
            m.topic == READING && counter(m) >= value
        })
        .await;
    up.seen.push(m);
}

/// A gateway (a counter every `poll`, `extra` under `uplink:`) whose uplink
/// reaches a real mosquitto through a [`Proxy`] the test cuts: (mosquitto,
/// proxy, subscriber to the readings upstream, gateway, subscriber on its own
/// broker), once the first reading arrived upstream (kept in `seen`).
pub(crate) async fn linked(poll: &str, extra: &str) -> (Mosquitto, Proxy, Sub, Gateway, Sub) {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let gw = Gateway::start(&gateway_yaml(&url, poll, extra));
    let local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    wait_reading(&mut up).await;
    (broker, proxy, up, gw, local)
}

/// Values first seen in increasing order, and duplicates at most `max_dups`.
pub(crate) fn assert_in_order(got: &[i64], max_dups: usize) {
    let mut seen = BTreeSet::new();
    let mut last = i64::MIN;
    let mut dups = 0;
    for &v in got {
        if !seen.insert(v) {
            dups += 1;
            continue;
        }
        assert!(v > last, "value {v} arrived after {last}: out of order");
        last = v;
    }
    assert!(dups <= max_dups, "{dups} duplicates (at most {max_dups})");
}

/// Every message `sub` receives during `span`.
pub(crate) async fn drain_for(sub: &mut Sub, span: Duration) -> Vec<Msg> {
    let until = tokio::time::Instant::now() + span;
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.try_next(span)).await {
        out.push(m);
    }
    out
}

/// The readings the local subscriber receives during `span`.
pub(crate) async fn local_values(local: &mut Sub, span: Duration) -> BTreeSet<i64> {
    drain_for(local, span)
        .await
        .iter()
        .filter(|m| m.topic == "gw1/dev/n")
        .map(counter)
        .collect()
}

/// Cuts `proxy` until `n` readings were committed while the uplink was
/// down, then restores it: (the first value of the outage, the first value
/// seen locally after the restore, the values seen locally).
pub(crate) async fn outage(proxy: &Proxy, local: &mut Sub, n: i64) -> (i64, i64, BTreeSet<i64>) {
    proxy.cut();
    let mut seen = BTreeSet::new();
    // readings from here on are committed while the uplink is down
    let start = local_values(local, Duration::from_millis(50))
        .await
        .last()
        .map_or(0, |v| v + 1);
    wait_local_value(local, start + n, &mut seen).await;
    proxy.restore();
    wait_local_value(local, start + n + 1, &mut seen).await;
    let restored_at = *seen.last().expect("values");
    (start, restored_at, seen)
}

pub(crate) async fn wait_local_value(local: &mut Sub, at_least: i64, seen: &mut BTreeSet<i64>) {
    loop {
        let m = local.next(SECS).await;
        if m.topic == "gw1/dev/n" {
            let v = counter(&m);
            seen.insert(v);
            if v >= at_least {
                return;
            }
        }
    }
}

/// Publishes `n` messages (`payload(i)`) on `topic` from a local QoS 1
/// client and waits for every PUBACK of the embedded broker.
pub(crate) async fn publish_locally(
    port: u16,
    topic: &str,
    n: usize,
    payload: impl Fn(usize) -> Vec<u8>,
) {
    let msgs = (0..n).map(|i| (topic.to_string(), payload(i)));
    publish_all(port, "local-pub", msgs, Duration::from_secs(60)).await;
}

/// Publishes every `(topic, payload)` in order from a local QoS 1 client
/// `id` and waits, for at most `within`, for every PUBACK of the embedded
/// broker.
pub(crate) async fn publish_all(
    port: u16,
    id: &str,
    msgs: impl ExactSizeIterator<Item = (String, Vec<u8>)>,
    within: Duration,
) {
    let msgs = msgs.map(|(t, p)| (t, p, QoS::AtLeastOnce));
    publish_all_qos(port, id, msgs, within).await;
}

/// Publishes every `(topic, payload, qos)` (QoS 1 or 2) in order from a
/// local client `id` and waits, for at most `within`, until the embedded
/// broker has acknowledged each (PUBACK, or PUBCOMP for QoS 2).
pub(crate) async fn publish_all_qos(
    port: u16,
    id: &str,
    msgs: impl ExactSizeIterator<Item = (String, Vec<u8>, QoS)>,
    within: Duration,
) {
    let (client, mut el) = rumqttc::AsyncClient::new(options(id, port), 100);
    let n = msgs.len();
    let pump = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(
                    rumqttc::Incoming::PubAck(_) | rumqttc::Incoming::PubComp(_),
                )) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("local publisher: {e}"),
            }
        }
    });
    for (topic, payload, qos) in msgs {
        client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish");
    }
    tokio::time::timeout(within, pump)
        .await
        .unwrap_or_else(|_| panic!("local acknowledgements did not all arrive within {within:?}"))
        .expect("pump");
}

/// An operator upstream (rumqttc on `port`) publishes `payload` on
/// `topic`; the returned task keeps its connection until aborted.
pub(crate) async fn operator_publish(
    port: u16,
    topic: &str,
    qos: QoS,
    payload: &str,
) -> tokio::task::JoinHandle<()> {
    let (client, mut el) = rumqttc::AsyncClient::new(options("operator", port), 10);
    client
        .publish(topic, qos, false, payload.to_string())
        .await
        .expect("publish");
    tokio::spawn(async move {
        let _client = client;
        while el.poll().await.is_ok() {}
    })
}

/// Waits until the running gateway's outbox holds at least `n` messages
/// (local clients' messages are committed a batch after the broker's PUBACK).
pub(crate) async fn wait_outbox(gw: &Gateway, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while outbox_messages(&gw.cfg) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox never held {n} messages; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counter values of the readings in the outbox, in row order (the
/// first `n` rows, `fieldgate outbox list`).
pub(crate) fn outbox_values(cfg: &ConfigDir, n: usize) -> Vec<i64> {
    let out = fieldgate(&["outbox", "list", "-n", &n.to_string(), "-c", cfg.path_str()]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(READING))
        .map(|l| {
            let v = l.split("\"value\":").nth(1).expect("value in payload");
            v.split(',')
                .next()
                .expect("number")
                .parse()
                .expect("integer")
        })
        .collect()
}

pub(crate) fn outbox_messages(cfg: &ConfigDir) -> u64 {
    let out = fieldgate(&["outbox", "stats", "-c", cfg.path_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("messages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no message count in:\n{text}"))
}

#[tokio::test]
async fn outage_under_qos1_loses_nothing_and_keeps_order() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mport = crate::support::free_port();
    let metrics = format!("metrics:\n  listen: 127.0.0.1:{mport}\n");
    let mut gw = Gateway::start(&gateway_yaml(&url, "20ms", &metrics));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    let online = up.wait_topic("site/gw1/status", SECS).await;
    assert_eq!(online.text(), "online");
    let first = wait_reading(&mut up).await;

    proxy.cut();
    // the outage itself: ten seconds of traffic with the uplink down
    tokio::time::sleep(Duration::from_secs(10)).await;
    let buffered = outbox_messages(&gw.cfg);
    assert!(
        buffered > 100,
        "only {buffered} messages buffered during the outage"
    );
    // what an operator sees during the outage
    let (_, text) = crate::ops::http_get(mport, "/metrics");
    let metric = |name: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(metric("fieldgate_uplink_connected"), 0);
    assert!(metric("fieldgate_outbox_depth") > 100, "{text}");
    assert!(metric("fieldgate_outbox_oldest_age_seconds") >= 5, "{text}");
    proxy.restore();

    let mut seen = BTreeSet::new();
    let after = local_values(&mut local, Duration::from_millis(1)).await;
    seen.extend(after);
    let last = *seen.last().expect("local readings");
    wait_local_value(&mut local, last + 20, &mut seen).await;
    wait_upstream(&mut up, last + 20).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let all: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &all, Duration::from_secs(30), &gw).await;
    assert!(first <= 1, "the first reading upstream was {first}");
    assert_in_order(&got, 100);
    assert_eq!(outbox_messages(&gw.cfg), 0, "outbox not drained");
}

#[tokio::test]
async fn sigkill_during_outage_then_restart_sends_everything_committed() {
    let (_broker, proxy, mut up, mut gw, mut local) = linked("10ms", "").await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    proxy.cut();
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 150, &mut seen).await;
    gw.signal(Signal::SIGKILL);
    let _ = gw.wait_exit(SECS);
    // every reading the local broker delivered was committed before
    seen.extend(local_values(&mut local, Duration::from_millis(100)).await);
    drop(local);
    assert!(outbox_messages(&gw.cfg) > 0);

    // restart with the counter far ahead, so old and new readings differ
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    let data = cfg.dir.path().join("data");
    std::fs::write(
        &cfg.path,
        crate::support::fill(
            &gateway_yaml_from(&url, "10ms", 1_000_000, "gw1/#", ""),
            port,
            &data,
        ),
    )
    .expect("rewrite config");
    drop(gw);
    let mut gw = Gateway::spawn(cfg, port, &[]);
    proxy.restore();
    let want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    let old: Vec<i64> = got.iter().copied().filter(|v| *v < 1_000_000).collect();
    assert_in_order(&old, 100);
    // the new life's readings follow
    up.wait_for(SECS, |m: &Msg| {
        m.topic == READING && counter(m) >= 1_000_000
    })
    .await;
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn broker_restart_loses_nothing() {
    let (mut broker, proxy, mut up1, mut gw, mut local) = linked("10ms", "").await;
    let port = broker.port;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 30, &mut seen).await;
    // the broker dies with its sessions (no persistence) and comes back
    proxy.cut();
    broker.kill();
    // everything the old broker delivered before it died: read until the
    // subscriber's connection ends (a fixed time missed some under load)
    let mut old = std::mem::take(&mut up1.seen);
    while let Some(m) = up1.try_next(SECS).await {
        old.push(m);
    }
    let before: BTreeSet<i64> = old
        .into_iter()
        .filter(|m| m.topic == READING)
        .map(|m| counter(&m))
        .collect();
    let mark = *seen.last().expect("values");
    wait_local_value(&mut local, mark + 100, &mut seen).await;
    let _broker = Mosquitto::launch(port, None);
    let mut up2 = Sub::connect(port, &["site/gw1/dev/#"], QoS::AtLeastOnce).await;
    proxy.restore();
    wait_local_value(&mut local, mark + 150, &mut seen).await;
    wait_upstream(&mut up2, mark + 150).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    // what the old broker took before it died, plus what the new one got
    let want: BTreeSet<i64> = (0..=*seen.last().expect("values"))
        .filter(|v| !before.contains(v))
        .collect();
    let got = collect_until(&mut up2, &want, Duration::from_secs(30), &gw).await;
    assert_in_order(&got, 100);
}

#[tokio::test]
async fn flapping_link_loses_nothing() {
    let (_broker, proxy, mut up, mut gw, mut local) = linked("10ms", "").await;
    for _ in 0..10 {
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.restore();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut seen = local_values(&mut local, Duration::from_millis(1)).await;
    let last = *seen.last().expect("values");
    wait_local_value(&mut local, last + 20, &mut seen).await;
    wait_upstream(&mut up, last + 20).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    // duplicates: at most one window per reconnect
    assert_in_order(&got, 10 * 100);
}
