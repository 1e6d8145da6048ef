//! Retained messages: stored, replaced and cleared only by retained
//! publishes, the retain flag on delivery, their QoS, and re-subscribing.

use std::time::Duration;

use rumqttc::{Packet, QoS};

use super::raw::Raw;
use super::{Client, SECS, opts, qos, yaml};
use crate::support::{Gateway, Sub};

const QUIET: Duration = Duration::from_millis(500);

/// MQTT-3.3.1-5 (stored), -6 and -8 (sent on SUBSCRIBE with retain=1),
/// -7 (replaced), -9 (live copies retain=0), -10/-11 (cleared by an empty retained publish).
#[tokio::test]
async fn retained_messages_are_set_replaced_and_cleared() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("c-pub-ret", gw.port)).await;
    let mut live = Sub::connect(gw.port, &["c/ret"], QoS::AtLeastOnce).await;
    let mut retain = async |payload: &str| {
        publisher
            .client
            .publish("c/ret", QoS::AtLeastOnce, true, payload.to_string())
            .await
            .expect("queue publish");
        publisher
            .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
            .await;
    };

    retain("one").await;
    let mut late = Sub::connect(gw.port, &["c/ret"], QoS::AtLeastOnce).await;
    let m = late.wait_topic("c/ret", SECS).await;
    assert_eq!((m.text().as_str(), m.retain), ("one", true));

    retain("two").await;
    let mut later = Sub::connect(gw.port, &["c/#"], QoS::AtLeastOnce).await;
    let m = later.wait_topic("c/ret", SECS).await;
    assert_eq!((m.text().as_str(), m.retain), ("two", true));
    assert!(
        later.try_next(QUIET).await.is_none(),
        "only the latest retained message"
    );

    // subscribers that were already there get live copies without the flag
    let m1 = live.wait_topic("c/ret", SECS).await;
    let m2 = live.wait_topic("c/ret", SECS).await;
    assert_eq!((m1.text().as_str(), m1.retain), ("one", false));
    assert_eq!((m2.text().as_str(), m2.retain), ("two", false));

    retain("").await;
    let mut last = Sub::connect(gw.port, &["c/ret"], QoS::AtLeastOnce).await;
    assert!(
        last.try_next(QUIET).await.is_none(),
        "an empty retained publish clears the retained message"
    );
}

/// MQTT-3.3.1-12: a publish without the retain flag (empty or not) neither
/// stores, replaces nor clears the retained message.
#[tokio::test]
async fn empty_publish_without_retain_keeps_the_retained_message() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("c-pub-keep", gw.port)).await;
    for (payload, retain) in [("keep", true), ("", false), ("live", false)] {
        publisher
            .client
            .publish("c/keep", QoS::AtLeastOnce, retain, payload)
            .await
            .expect("queue publish");
        publisher
            .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
            .await;
    }
    let mut sub = Sub::connect(gw.port, &["c/keep"], QoS::AtLeastOnce).await;
    let m = sub.wait_topic("c/keep", SECS).await;
    assert_eq!((m.text().as_str(), m.retain), ("keep", true));
}

/// MQTT-3.8.4-3: a SUBSCRIBE in a resumed session (clean_session=0)
/// replaces the stored subscription and sends the retained messages again.
#[tokio::test]
async fn resubscribing_in_a_resumed_session_resends_retained() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("c-pub-rs", gw.port)).await;
    publisher
        .client
        .publish("c/rs", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("queue publish");
    publisher
        .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
        .await;
    let mut o = opts("c-rs", gw.port);
    o.set_clean_session(false);
    let first = Sub::connect_with(o.clone(), &["c/rs"], QoS::AtLeastOnce).await;
    drop(first);
    let mut again = Sub::connect_with(o, &["c/rs"], QoS::AtLeastOnce).await;
    let m = again.wait_topic("c/rs", SECS).await;
    assert_eq!((m.text().as_str(), m.retain), ("kept", true));
}

/// §3.3.1.3 with MQTT-3.8.4-6: a retained message is delivered at the
/// minimum of its stored QoS and the subscription's QoS.
#[tokio::test]
async fn retained_delivery_qos_is_min_of_stored_and_subscription_mqtt_3_8_4_6() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("r-pub-q", gw.port)).await;
    publisher
        .publish_acked("r/q/2", QoS::ExactlyOnce, true, "two")
        .await;
    publisher
        .publish_acked("r/q/0", QoS::AtMostOnce, true, "zero")
        .await;
    // a QoS 0 publish has no acknowledgement: wait until it is retained
    let mut probe = Sub::connect(gw.port, &["r/q/0"], QoS::AtMostOnce).await;
    probe.wait_topic("r/q/0", SECS).await;
    for s in 0..=2u8 {
        let mut sub = Sub::connect(gw.port, &["r/q/#"], qos(s)).await;
        let two = sub.wait_topic("r/q/2", SECS).await;
        let zero = sub.wait_topic("r/q/0", SECS).await;
        assert_eq!(two.qos, qos(s), "stored QoS 2, subscription QoS {s}");
        assert_eq!(
            zero.qos,
            QoS::AtMostOnce,
            "stored QoS 0, subscription QoS {s}"
        );
        assert!(two.retain && zero.retain, "MQTT-3.3.1-8");
    }
}

/// MQTT-3.8.4-3: a SUBSCRIBE that replaces an existing subscription in the
/// same connection sends the retained messages again, retain flag set.
#[tokio::test]
async fn resubscribing_in_the_same_connection_resends_retained_mqtt_3_8_4_3() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("r-pub-again", gw.port)).await;
    publisher
        .publish_acked("r/again", QoS::AtLeastOnce, true, "kept")
        .await;
    let mut c = Raw::connect(gw.port, "r-again").await;
    for round in 1..=2u16 {
        assert_eq!(c.subscribe(round, "r/again", 1).await, 1);
        let p = c.publish_in(SECS).await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.retain),
            ("r/again", &b"kept"[..], true),
            "SUBSCRIBE number {round}"
        );
        c.send(&super::raw::ack(
            super::raw::PUBACK,
            p.pkid.expect("QoS 1 packet id"),
        ))
        .await;
    }
}
