//! Topic matching: `+` and `#`, `$` topics, UNSUBSCRIBE.

use std::time::Duration;

use rumqttc::QoS;

use super::raw::{self, Raw};
use super::{Client, SECS, opts, yaml};
use crate::support::{Gateway, Sub};

const QUIET: Duration = Duration::from_millis(500);

/// MQTT-4.7.1-2 (`#`, also matching the parent level) and MQTT-4.7.1-3 (`+`, one level).
#[tokio::test]
async fn wildcards_plus_and_hash() {
    let gw = Gateway::start(&yaml(""));
    let mut plus = Sub::connect(gw.port, &["c/w/+/temp"], QoS::AtMostOnce).await;
    let mut hash = Sub::connect(gw.port, &["c/w/#"], QoS::AtMostOnce).await;
    let mut level = Sub::connect(gw.port, &["c/w/+"], QoS::AtMostOnce).await;
    let publisher = Client::connect(opts("c-pub-w", gw.port)).await;
    for t in ["c/w/a/temp", "c/w/a/b/temp", "c/w/b", "c/w", "c/wx/a"] {
        publisher
            .client
            .publish(t, QoS::AtMostOnce, false, t)
            .await
            .expect("queue publish");
    }
    let cases: [(&mut Sub, &[&str]); 3] = [
        (&mut plus, &["c/w/a/temp"]),
        (&mut hash, &["c/w", "c/w/a/b/temp", "c/w/a/temp", "c/w/b"]),
        (&mut level, &["c/w/b"]),
    ];
    for (sub, want) in cases {
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(sub.next(SECS).await.topic);
        }
        if let Some(extra) = sub.try_next(QUIET).await {
            got.push(extra.topic);
        }
        got.sort();
        assert_eq!(got, want);
    }
}

/// MQTT-4.7.2-1: `#` and `+/...` do not match topics starting with `$`.
#[tokio::test]
async fn dollar_topics_are_not_matched_by_wildcards_at_the_first_level() {
    let gw = Gateway::start(&yaml(""));
    let mut all = Sub::connect(gw.port, &["#"], QoS::AtMostOnce).await;
    let mut plus = Sub::connect(gw.port, &["+/x"], QoS::AtMostOnce).await;
    let publisher = Client::connect(opts("c-pub-dollar", gw.port)).await;
    for (t, p) in [("$app/x", "d"), ("plain/x", "p")] {
        publisher
            .client
            .publish(t, QoS::AtMostOnce, false, p)
            .await
            .expect("queue publish");
    }
    for sub in [&mut all, &mut plus] {
        sub.wait_topic("plain/x", SECS).await;
        let extra = sub.try_next(QUIET).await;
        assert!(
            sub.seen
                .iter()
                .chain(extra.iter())
                .all(|m| !m.topic.starts_with('$')),
            "a $ topic matched a first-level wildcard"
        );
    }
}

/// MQTT-4.7.2-1 (the other side): an explicit `$...` filter matches.
#[tokio::test]
async fn dollar_topics_can_be_subscribed_explicitly() {
    let gw = Gateway::start(&yaml(""));
    let mut dollar = Sub::connect(gw.port, &["$app/#"], QoS::AtMostOnce).await;
    let publisher = Client::connect(opts("c-pub-dollar2", gw.port)).await;
    publisher
        .client
        .publish("$app/x", QoS::AtMostOnce, false, "d")
        .await
        .expect("queue publish");
    assert_eq!(dollar.wait_topic("$app/x", SECS).await.text(), "d");
}

/// MQTT-3.10.4-1/-2: UNSUBSCRIBE deletes the subscription and delivery
/// stops; MQTT-3.10.4-4: UNSUBACK carries its packet id; MQTT-3.10.4-5:
/// also when no subscription matched.
#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_acknowledged_mqtt_3_10_4_4() {
    let gw = Gateway::start(&yaml(""));
    let mut c = Raw::connect(gw.port, "t-unsub").await;
    assert_eq!(c.subscribe(1, "t/u/#", 1).await, 1);
    assert_eq!(c.subscribe(2, "t/keep", 0).await, 0);
    c.send(&raw::publish("t/u/a", b"before", 0, false, 0)).await;
    assert_eq!(c.publish_in(SECS).await.payload, b"before");
    c.send(&raw::unsubscribe(0x0BCD, "t/u/#")).await;
    assert_eq!(c.expect(raw::UNSUBACK, SECS).await, [0x0B, 0xCD]);
    c.send(&raw::unsubscribe(0x0BCE, "t/never")).await;
    assert_eq!(
        c.expect(raw::UNSUBACK, SECS).await,
        [0x0B, 0xCE],
        "UNSUBACK for a filter never subscribed"
    );
    // own messages in order (MQTT-4.6.0-6): "after" would come before the marker
    c.send(&raw::publish("t/u/a", b"after", 0, false, 0)).await;
    c.send(&raw::publish("t/keep", b"marker", 0, false, 0))
        .await;
    let p = c.publish_in(SECS).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("t/keep", &b"marker"[..]),
        "a message after UNSUBSCRIBE was delivered"
    );
}
