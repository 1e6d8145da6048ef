//! QoS on delivery: each level's handshake, the delivered QoS (minimum of
//! the publish and the subscription), overlapping subscriptions, SUBACK
//! return codes, inbound QoS 2 exactly once.

use std::time::Duration;

use rumqttc::{Packet, QoS, SubscribeReasonCode};

use super::raw::{self, Raw};
use super::{Client, SECS, opts, qos, yaml};
use crate::support::{Gateway, Sub};

const QUIET: Duration = Duration::from_millis(500);

/// MQTT-4.3.1-1, MQTT-4.3.2-1, MQTT-4.3.3-1: QoS 0, 1 (PUBACK) and 2
/// (PUBREC, PUBREL, PUBCOMP) flows, delivered at their QoS.
#[tokio::test]
async fn qos_0_1_2_are_delivered_and_acknowledged() {
    let gw = Gateway::start(&yaml(""));
    let mut publisher = Client::connect(opts("c-pub-q", gw.port)).await;
    for q in 0..=2u8 {
        let topic = format!("c/qos/{q}");
        let mut sub = Sub::connect(gw.port, &[&topic], qos(q)).await;
        publisher
            .client
            .publish(&topic, qos(q), false, format!("m{q}"))
            .await
            .expect("queue publish");
        match q {
            1 => {
                publisher
                    .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
                    .await;
            }
            2 => {
                publisher
                    .wait_incoming(SECS, |p| matches!(p, Packet::PubComp(_)))
                    .await;
            }
            _ => {}
        }
        let m = sub.wait_topic(&topic, SECS).await;
        assert_eq!(m.text(), format!("m{q}"));
        assert_eq!(
            m.qos,
            qos(q),
            "delivered QoS for a QoS {q} publish and subscription"
        );
        assert!(!m.retain);
    }
}

/// MQTT-3.8.4-6: the delivered QoS is at most the subscription's.
#[tokio::test]
async fn subscription_qos_caps_the_delivered_qos() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["c/cap/#"], QoS::AtMostOnce).await;
    let mut publisher = Client::connect(opts("c-pub-cap", gw.port)).await;
    publisher
        .client
        .publish("c/cap/2", QoS::ExactlyOnce, false, "x")
        .await
        .expect("queue publish");
    publisher
        .wait_incoming(SECS, |p| matches!(p, Packet::PubComp(_)))
        .await;
    let m = sub.wait_topic("c/cap/2", SECS).await;
    assert_eq!(m.qos, QoS::AtMostOnce);
}

/// MQTT-3.8.4-6: the delivered QoS is at most the publish's.
#[tokio::test]
async fn publish_qos_caps_the_delivered_qos() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["c/min/#"], QoS::ExactlyOnce).await;
    let publisher = Client::connect(opts("c-pub-min", gw.port)).await;
    publisher
        .client
        .publish("c/min/0", QoS::AtMostOnce, false, "zero")
        .await
        .expect("queue publish");
    publisher
        .client
        .publish("c/min/1", QoS::AtLeastOnce, false, "one")
        .await
        .expect("queue publish");
    let m0 = sub.wait_topic("c/min/0", SECS).await;
    let m1 = sub.wait_topic("c/min/1", SECS).await;
    assert_eq!(
        m0.qos,
        QoS::AtMostOnce,
        "QoS 0 publish to a QoS 2 subscription"
    );
    assert_eq!(
        m1.qos,
        QoS::AtLeastOnce,
        "QoS 1 publish to a QoS 2 subscription"
    );
}

/// MQTT-3.3.5-1: overlapping subscriptions of one client: one copy, at the
/// highest QoS of the matching subscriptions.
#[tokio::test]
async fn overlapping_subscriptions_deliver_at_the_highest_qos() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Client::connect(opts("c-overlap", gw.port)).await;
    for (f, q) in [("c/ov/#", QoS::AtLeastOnce), ("c/ov/a", QoS::AtMostOnce)] {
        sub.client.subscribe(f, q).await.expect("queue subscribe");
        sub.wait_incoming(SECS, |p| matches!(p, Packet::SubAck(_)))
            .await;
    }
    let publisher = Client::connect(opts("c-pub-ov", gw.port)).await;
    publisher
        .client
        .publish("c/ov/a", QoS::AtLeastOnce, false, "o")
        .await
        .expect("queue publish");
    let first = sub
        .wait_incoming(SECS, |p| matches!(p, Packet::Publish(_)))
        .await;
    let mut copies = vec![first];
    copies.extend(
        sub.publishes_within(QUIET)
            .await
            .into_iter()
            .map(Packet::Publish),
    );
    let qoss: Vec<QoS> = copies
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) if &p.payload[..] == b"o" => Some(p.qos),
            _ => None,
        })
        .collect();
    assert_eq!(
        qoss,
        [QoS::AtLeastOnce],
        "one copy, at the highest QoS of the matching subscriptions"
    );
}

/// MQTT-3.8.4-5 / MQTT-3.8.4-2: one return code per filter, in order, in a
/// SUBACK carrying the SUBSCRIBE's packet id; the granted QoS is the requested one.
#[tokio::test]
async fn suback_has_one_code_per_filter_in_order_mqtt_3_8_4_5() {
    let gw = Gateway::start(&yaml(""));
    let mut c = Raw::connect(gw.port, "q-suback").await;
    c.send(&raw::subscribe_raw(
        0x82,
        0x1234,
        &[(b"q/a", 2), (b"q/b", 0), (b"q/+/c", 1)],
    ))
    .await;
    let body = c.expect(raw::SUBACK, SECS).await;
    assert_eq!(body, [0x12, 0x34, 2, 0, 1]);
}

/// MQTT-3.8.4-3: a SUBSCRIBE to an existing filter replaces the
/// subscription: the new (lower) QoS applies, and there is still one copy.
#[tokio::test]
async fn resubscribing_replaces_the_subscription_qos_mqtt_3_8_4_3() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Client::connect(opts("q-resub", gw.port)).await;
    sub.subscribe_acked("q/re", QoS::ExactlyOnce).await;
    let codes = sub.subscribe_acked("q/re", QoS::AtMostOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    let mut publisher = Client::connect(opts("q-pub-re", gw.port)).await;
    publisher
        .publish_acked("q/re", QoS::ExactlyOnce, false, "r")
        .await;
    let first = sub
        .wait_incoming(SECS, |p| matches!(p, Packet::Publish(_)))
        .await;
    let Packet::Publish(p) = first else {
        unreachable!()
    };
    assert_eq!(p.qos, QoS::AtMostOnce, "the replaced subscription's QoS");
    assert!(
        sub.publishes_within(QUIET).await.is_empty(),
        "a second copy after re-subscribing"
    );
}

/// MQTT-4.3.3-2: a QoS 2 PUBLISH re-sent (DUP) with the same packet id
/// before PUBREL is one message: delivered once. After PUBCOMP the id
/// is free again and a new PUBLISH with it is a new message.
#[tokio::test]
async fn inbound_qos2_duplicate_before_pubrel_is_delivered_once_mqtt_4_3_3_2() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["q/x2"], QoS::ExactlyOnce).await;
    let mut p = Raw::connect(gw.port, "q-x2-pub").await;
    p.send(&raw::publish("q/x2", b"once", 2, false, 7)).await;
    assert_eq!(p.expect(raw::PUBREC, SECS).await, [0, 7]);
    // the same message again, DUP set, as after a lost PUBREC
    p.send(&raw::publish_raw(0x3C, b"q/x2", Some(7), b"once"))
        .await;
    assert_eq!(
        p.expect(raw::PUBREC, SECS).await,
        [0, 7],
        "PUBREC for the duplicate"
    );
    p.send(&raw::ack(raw::PUBREL, 7)).await;
    assert_eq!(p.expect(raw::PUBCOMP, SECS).await, [0, 7]);
    // packet id 7 again, now a new message
    p.send(&raw::publish("q/x2", b"again", 2, false, 7)).await;
    p.expect(raw::PUBREC, SECS).await;
    p.send(&raw::ack(raw::PUBREL, 7)).await;
    p.expect(raw::PUBCOMP, SECS).await;
    p.send(&raw::publish("q/x2", b"end", 0, false, 0)).await;
    sub.wait_for(SECS, |m| m.text() == "end").await;
    let got: Vec<String> = sub.seen.iter().map(|m| m.text()).collect();
    assert_eq!(got, ["once", "again"], "deliveries before the marker");
}
