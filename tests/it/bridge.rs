//! The store-and-forward bridge against a real upstream mosquitto, with
//! outages made by a TCP proxy, SIGKILL of the real binary, a broker
//! restart, capacity limits, TLS and commands from upstream.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rumqttc::QoS;

use crate::support::{ConfigDir, Gateway, Msg, Sub, fieldgate, options};
use crate::upstream::{Mosquitto, Proxy, counter, gateway_yaml, gateway_yaml_from, make_pki};

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
async fn linked(poll: &str, extra: &str) -> (Mosquitto, Proxy, Sub, Gateway, Sub) {
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
    let (client, mut el) = rumqttc::AsyncClient::new(options(id, port), 100);
    let n = msgs.len();
    let pump = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("local publisher: {e}"),
            }
        }
    });
    for (topic, payload) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    tokio::time::timeout(within, pump)
        .await
        .unwrap_or_else(|_| panic!("local PUBACKs did not all arrive within {within:?}"))
        .expect("pump");
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
    let before: BTreeSet<i64> = drain_for(&mut up1, Duration::from_millis(300))
        .await
        .into_iter()
        .chain(up1.seen.drain(..))
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

/// Runs a gateway whose uplink never connects until the counter passed
/// `until`, stops it, and returns (values seen locally, outbox values, log).
async fn fill_outbox(policy: &str, until: i64) -> (BTreeSet<i64>, Vec<i64>, String) {
    let extra = format!("  buffer: {{ max_messages: 20, when_full: {policy} }}");
    // nothing listens on this port: the uplink stays down
    let url = format!("mqtt://127.0.0.1:{}", crate::support::free_port());
    let mut gw = Gateway::start(&gateway_yaml_from(&url, "10ms", 0, "gw1/dev/#", &extra));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, until, &mut seen).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let out = fieldgate(&["outbox", "list", "-n", "100", "-c", gw.cfg.path_str()]);
    assert!(out.status.success());
    let listed: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("site/gw1/dev/n"))
        .map(|l| {
            let v = l.split("\"value\":").nth(1).expect("value in payload");
            v.split(',')
                .next()
                .expect("number")
                .parse()
                .expect("integer")
        })
        .collect();
    (seen, listed, gw.log_text())
}

fn counted(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("bridge stopped"))
        .unwrap_or_else(|| panic!("no bridge summary in log:\n{log}"));
    line.split(&format!("{key}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[tokio::test]
async fn when_full_drop_oldest_keeps_the_newest() {
    let (seen, listed, log) = fill_outbox("drop_oldest", 60).await;
    // the newest 20 survive: at least up to what the local broker delivered
    // (a reading is committed before it is published locally)
    let newest = *listed.last().expect("rows");
    assert!(newest >= *seen.last().expect("values"));
    assert_eq!(listed, (newest - 19..=newest).collect::<Vec<i64>>());
    assert_eq!(counted(&log, "dropped_oldest"), (newest + 1 - 20) as u64);
    assert_eq!(counted(&log, "dropped_newest"), 0);
}

#[tokio::test]
async fn when_full_drop_newest_keeps_the_oldest() {
    let (seen, listed, log) = fill_outbox("drop_newest", 60).await;
    let last = *seen.last().expect("values");
    assert_eq!(listed, (0..20).collect::<Vec<i64>>());
    // every reading after the 20th was refused: at least those delivered
    // locally, and at most the few committed in the last moments
    let dropped = counted(&log, "dropped_newest") as i64;
    assert!(
        (last + 1 - 20..=last + 1 - 20 + 5).contains(&dropped),
        "{dropped} dropped, last {last}"
    );
    assert_eq!(counted(&log, "dropped_oldest"), 0);
}

#[tokio::test]
async fn live_first_sends_the_present_before_the_backlog() {
    let extra = "  inflight: 5\n  buffer: { drain: live_first }";
    let (_broker, proxy, mut up, mut gw, mut local) = linked("5ms", extra).await;
    proxy.cut();
    let mut seen = BTreeSet::new();
    // readings from here on are committed while the uplink is down
    let start = local_values(&mut local, Duration::from_millis(50))
        .await
        .last()
        .map_or(0, |v| v + 1);
    wait_local_value(&mut local, start + 400, &mut seen).await;
    proxy.restore();
    let restored_at = {
        wait_local_value(&mut local, start + 401, &mut seen).await;
        *seen.last().expect("values")
    };
    wait_local_value(&mut local, restored_at + 100, &mut seen).await;
    wait_upstream(&mut up, restored_at + 100).await;
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let want: BTreeSet<i64> = (start..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    // live readings (after the reconnect) overtake the backlog of the
    // outage; what was in flight at the cut (at most the window of 5, plus
    // what went into the dying connection) is resent first, as it must be
    let got: Vec<i64> = got.into_iter().filter(|v| *v >= start).collect();
    let backlog = |v: &i64| (start + 10..=start + 400).contains(v);
    let first_live = got.iter().position(|v| *v > start + 400).expect("live");
    let first_backlog = got.iter().position(backlog).expect("backlog");
    assert!(
        first_live < first_backlog,
        "the backlog went first: {:?}",
        &got[..20.min(got.len())]
    );
    let drained: Vec<i64> = got.iter().copied().filter(backlog).collect();
    assert_in_order(&drained, 5);
}

#[tokio::test]
async fn local_clients_qos1_messages_are_forwarded_once_in_order() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&gateway_yaml(&url, "50ms", ""));
    up.wait_topic("site/gw1/status", SECS).await;
    let (client, mut el) = rumqttc::AsyncClient::new(options("local-pub", gw.port), 100);
    let pump = tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                panic!("local publisher: {e}");
            }
        }
    });
    for i in 0..200 {
        tokio::time::timeout(
            SECS,
            client.publish("gw1/hmi/setpoint", QoS::AtLeastOnce, false, i.to_string()),
        )
        .await
        .unwrap_or_else(|_| panic!("local publish {i} stalled; log:\n{}", gw.log_text()))
        .expect("publish");
    }
    let mut got = Vec::new();
    let mut readings = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 200 arrived: {got:?}; log:\n{}",
            got.len(),
            gw.log_text()
        );
        let m = up.next(SECS).await;
        match m.topic.as_str() {
            "site/gw1/hmi/setpoint" => got.push(m.text().parse::<i64>().expect("int")),
            READING => readings.push(counter(&m)),
            _ => {}
        }
    }
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    // the gateway's own readings came once each (no echo through the link)
    for m in drain_for(&mut up, Duration::from_secs(1)).await {
        if m.topic == READING {
            readings.push(counter(&m));
        }
    }
    let unique: BTreeSet<i64> = readings.iter().copied().collect();
    assert_eq!(
        unique.len(),
        readings.len(),
        "duplicated readings: {readings:?}"
    );
    pump.abort();
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn command_from_upstream_reaches_the_local_set_topic_once() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let extra = "  commands:\n    - { filter: \"site/gw1/+/+/set\", strip_prefix: \"site/\" }";
    let mut gw = Gateway::start(&gateway_yaml(&url, "1s", extra));
    let mut local = Sub::connect(gw.port, &["gw1/+/+/set"], QoS::AtLeastOnce).await;
    up.wait_topic("site/gw1/status", SECS).await;
    let (client, mut el) = rumqttc::AsyncClient::new(options("operator", broker.port), 10);
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client
        .publish("site/gw1/dev/n/set", QoS::AtLeastOnce, false, "42")
        .await
        .expect("publish");
    let m = local.wait_topic("gw1/dev/n/set", SECS).await;
    assert_eq!(m.text(), "42");
    // the command is not forwarded back up (no loop)
    up.wait_topic("site/gw1/dev/n/set", SECS).await;
    let again = drain_for(&mut up, Duration::from_secs(1))
        .await
        .iter()
        .filter(|m| m.topic == "site/gw1/dev/n/set")
        .count();
    assert_eq!(again, 0, "the command came back upstream");
    pump.abort();
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn mqtts_with_a_test_ca_and_a_wrong_ca_is_refused() {
    let (broker, pki) = Mosquitto::start_tls();
    let tls_port = broker.tls_port.expect("tls port");
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtts://localhost:{tls_port}");
    let extra = format!("  ca_file: {}", pki.ca.display());
    let mut gw = Gateway::start(&gateway_yaml(&url, "50ms", &extra));
    let online = up.wait_topic("site/gw1/status", SECS).await;
    assert_eq!(online.text(), "online");
    wait_reading(&mut up).await;
    assert!(gw.terminate(SECS).success());
    up.wait_for(SECS, |m: &Msg| {
        m.topic == "site/gw1/status" && m.text() == "offline"
    })
    .await;
    let mut late = Sub::connect(broker.port, &["site/gw1/status"], QoS::AtLeastOnce).await;
    let retained = late.wait_topic("site/gw1/status", SECS).await;
    assert_eq!(retained.text(), "offline");
    assert!(retained.retain, "the status upstream is retained");

    // a CA that did not sign the broker's certificate
    let other = tempfile::tempdir().expect("tempdir");
    let wrong = make_pki(other.path(), "other");
    let extra = format!("  ca_file: {}", wrong.ca.display());
    let gw = Gateway::start(&gateway_yaml(&url, "50ms", &extra));
    let deadline = std::time::Instant::now() + SECS;
    while !gw.log_text().contains("uplink connection failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS failure logged:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in drain_for(&mut up, Duration::from_secs(1)).await {
        assert!(
            m.topic != READING,
            "a reading arrived over an unverified TLS connection"
        );
    }
    assert!(
        outbox_messages(&gw.cfg) > 0,
        "readings are kept while the uplink is refused"
    );
}
