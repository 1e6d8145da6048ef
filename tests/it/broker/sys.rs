//! `$SYS/broker/...` (mosquitto's names): retained, refreshed every
//! `sys_interval`, off with `sys_interval: 0s`, and never matched by a
//! first-level wildcard (MQTT-4.7.2-1).

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{SECS, local_args, mosquitto_spawn, yaml};
use crate::support::{Gateway, Sub};

/// Each entry: the accepted names under `$SYS/broker/` (a name also
/// matches its subtopics, e.g. `load/bytes/received/1min`).
const WANTED: &[&[&str]] = &[
    &["version"],
    &["uptime"],
    &["time"],
    &["clients/connected"],
    &["clients/disconnected"],
    &["clients/maximum"],
    &["clients/total"],
    &["messages/received"],
    &["messages/sent"],
    &["messages/publish/received", "publish/messages/received"],
    &["messages/publish/sent", "publish/messages/sent"],
    &["messages/publish/dropped", "publish/messages/dropped"],
    &["messages/retained/count", "retained messages/count"],
    &["subscriptions/count"],
    &["load/bytes/received"],
    &["load/bytes/sent"],
];

fn names_missing(seen: &[String]) -> Vec<&'static str> {
    WANTED
        .iter()
        .filter(|alts| {
            !alts.iter().any(|n| {
                let full = format!("$SYS/broker/{n}");
                seen.iter()
                    .any(|t| *t == full || t.starts_with(&format!("{full}/")))
            })
        })
        .map(|alts| alts[0])
        .collect()
}

/// `mosquitto_sub -t '#' -t '$SYS/#'` gets ordinary messages and the
/// `$SYS` tree; a late subscriber gets `$SYS` at once (retained; the
/// interval is 30 s, so these are not fresh publications).
#[tokio::test]
async fn mosquitto_sub_gets_the_sys_tree_retained() {
    let gw = Gateway::start(&yaml("sys_interval: 30s"));
    let port = gw.port.to_string();
    let mut child = mosquitto_spawn(
        "mosquitto_sub",
        &local_args(&port, &["-F", "%t", "-t", "#", "-t", "$SYS/#"]),
    );
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + SECS;
    while !names_missing(&seen).is_empty() {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(topic))) => seen.push(topic),
            Ok(other) => panic!("mosquitto_sub ended: {other:?}"),
            Err(_) => panic!(
                "$SYS topics missing after 10s: {:?}; saw {seen:?}",
                names_missing(&seen)
            ),
        }
    }
    let mut late = Sub::connect(gw.port, &["$SYS/broker/#"], QoS::AtMostOnce).await;
    for t in ["$SYS/broker/version", "$SYS/broker/uptime"] {
        let m = late.wait_topic(t, Duration::from_secs(5)).await;
        assert!(m.retain, "{t} is retained");
    }
}

/// `sys_interval: 1s`: `$SYS/broker/uptime` changes; meanwhile a `#`
/// subscriber gets none of it (MQTT-4.7.2-1).
#[tokio::test]
async fn sys_is_refreshed_every_sys_interval_and_hidden_from_hash() {
    let gw = Gateway::start(&yaml("sys_interval: 1s"));
    let mut all = Sub::connect(gw.port, &["#"], QoS::AtMostOnce).await;
    let mut up = Sub::connect(gw.port, &["$SYS/broker/uptime"], QoS::AtMostOnce).await;
    let first = up.next(SECS).await.text();
    let later = up
        .wait_for(Duration::from_secs(5), |m| m.text() != first)
        .await;
    assert_ne!(later.text(), first);
    assert!(!later.retain, "a live refresh has retain=0 (MQTT-3.3.1-9)");
    while let Some(m) = all.try_next(Duration::from_millis(100)).await {
        assert!(!m.topic.starts_with('$'), "`#` matched {}", m.topic);
    }
}

/// `sys_interval: 0s` turns `$SYS` off: nothing arrives on `$SYS/#`.
#[tokio::test]
async fn sys_interval_zero_publishes_no_sys_topics() {
    let gw = Gateway::start(&yaml("sys_interval: 0s"));
    let mut sys = Sub::connect(gw.port, &["$SYS/#"], QoS::AtMostOnce).await;
    // two intervals' worth of the 1 s a test would use
    if let Some(m) = sys.try_next(Duration::from_millis(2500)).await {
        panic!("sys_interval 0s, yet {} = {:?}", m.topic, m.text());
    }
}
