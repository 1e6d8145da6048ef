//! The bridge's policies against a real upstream mosquitto: both
//! `when_full` policies, `live_first`, local clients' messages, commands
//! from upstream, mqtts with a test CA. (Outages, SIGKILL, broker restarts:
//! the `bridge` module itself.)

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::*;
use crate::support::{Gateway, Msg, Sub, options};
use crate::upstream::{Mosquitto, Proxy, counter, gateway_yaml, gateway_yaml_from, make_pki};

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
    let listed = outbox_values(&gw.cfg, 100);
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

/// Issue 13, item 3: the uplink is up but slow while the outbox is at its
/// limit, so `drop_oldest` runs between sends and acknowledgements. Every
/// committed message is accounted for exactly once: acknowledged upstream,
/// dropped, or left in the outbox (a row in flight that was dropped and
/// then acknowledged would count twice), and the outbox holds what the
/// counters say.
#[tokio::test]
async fn a_slow_uplink_at_the_limit_accounts_for_every_message_once() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/n"], QoS::AtLeastOnce).await;
    let proxy = Proxy::start_slow(broker.port, Duration::from_millis(20)).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let extra = "  inflight: 10\n  buffer: { max_messages: 30, when_full: drop_oldest }";
    let mut gw = Gateway::start(&gateway_yaml(&url, "2ms", extra));
    wait_reading(&mut up).await;
    gw.wait_log("outbox full or expired", SECS);
    wait_reading(&mut up).await;
    assert!(gw.terminate(SECS).success());
    let log = gw.log_text();
    let n = |key: &str| counted(&log, key);
    let (acked, dropped, left) = (n("acked"), n("dropped_oldest"), n("left_in_outbox"));
    assert!(acked > 0 && dropped > 0, "{acked} acked, {dropped} dropped");
    assert_eq!(
        n("committed"),
        acked + dropped + n("dropped_newest") + n("expired") + n("dead") + left,
        "every committed message once:\n{log}"
    );
    assert_eq!(
        outbox_messages(&gw.cfg),
        left,
        "the outbox holds what the counters say"
    );
}

#[tokio::test]
async fn when_full_drop_newest_keeps_the_oldest() {
    let (seen, listed, log) = fill_outbox("drop_newest", 60).await;
    let last = *seen.last().expect("values");
    assert_eq!(listed, (0..20).collect::<Vec<i64>>());
    // every reading after the 20th was refused: at least those delivered
    // locally, and at most those of the last commit window (the local
    // broker sees a reading once its commit ended) and a few more
    let window = fieldgate::bridge::config::DEFAULT_COMMIT_WINDOW
        .get()
        .as_millis() as i64;
    let per_window = window / 10; // one reading every 10 ms
    let dropped = counted(&log, "dropped_newest") as i64;
    assert!(
        (last + 1 - 20..=last + 1 - 20 + per_window + 5).contains(&dropped),
        "{dropped} dropped, last {last}"
    );
    assert_eq!(counted(&log, "dropped_oldest"), 0);
}

#[tokio::test]
async fn live_first_sends_the_present_before_the_backlog() {
    let extra = "  inflight: 5\n  buffer: { drain: live_first }";
    let (_broker, proxy, mut up, mut gw, mut local) = linked("5ms", extra).await;
    let (start, restored_at, mut seen) = outage(&proxy, &mut local, 400).await;
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
    let pump = operator_publish(broker.port, "site/gw1/dev/n/set", QoS::AtLeastOnce, "42").await;
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
