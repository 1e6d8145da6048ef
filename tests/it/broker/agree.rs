//! The last MQTT 3.1.1 differences from mosquitto, each run byte for byte
//! against mosquitto 2 and the gateway in the same test, asserting that
//! both do the same and what that is: an acknowledgement of the wrong
//! kind closes the connection; credentials sent to a broker without users
//! are ignored; topics and filters past 200 `/` separators close the
//! connection; a mosquitto bridge (protocol level 0x84, `try_private`) is
//! accepted and does not get its own messages back; a client's PUBLISH to
//! `$SYS` is not delivered.

use std::future::Future;
use std::time::Duration;

use super::raw::{self, ConnectOutcome, Raw};
use super::{SECS, yaml};
use crate::support::Gateway;
use crate::upstream::Mosquitto;

/// Runs `scenario` against mosquitto and the gateway; returns
/// (mosquitto's outcome, the gateway's).
async fn on_both<T, F, Fut>(scenario: F) -> (T, T)
where
    F: Fn(u16) -> Fut,
    Fut: Future<Output = T>,
{
    let mosquitto = Mosquitto::start_with("");
    let gw = Gateway::start(&yaml(""));
    let theirs = scenario(mosquitto.port).await;
    let ours = scenario(gw.port).await;
    (theirs, ours)
}

/// A QoS `qos` message reaches a raw subscriber, which answers with
/// `ack`; whether the broker then closes the subscriber's connection.
async fn answer_with(port: u16, qos: u8, ack: u8, tag: &str) -> bool {
    let mut sub = Raw::connect(port, &format!("wrong-sub-{tag}")).await;
    assert_eq!(sub.subscribe(1, "wrong/t", qos).await, qos);
    let mut publisher = Raw::connect(port, &format!("wrong-pub-{tag}")).await;
    publisher
        .send(&raw::publish("wrong/t", b"x", qos, false, 7))
        .await;
    if qos == 2 {
        // mosquitto hands a QoS 2 message on at PUBREL
        publisher.expect(raw::PUBREC, SECS).await;
        publisher.send(&raw::ack(raw::PUBREL, 7)).await;
    }
    let p = sub.publish_in(SECS).await;
    let id = p.pkid.expect("a QoS 1/2 delivery has a packet id");
    sub.send(&raw::ack(ack, id)).await;
    raw::closed_within(&mut sub.s, Duration::from_secs(2)).await
}

#[tokio::test]
async fn an_acknowledgement_of_the_wrong_kind_closes_the_connection() {
    let cases = [
        (1, raw::PUBREC, "pubrec-for-qos1"),
        (1, raw::PUBCOMP, "pubcomp-for-qos1"),
        (2, raw::PUBACK, "puback-for-qos2"),
        (2, raw::PUBCOMP, "pubcomp-before-pubrec"),
    ];
    for (qos, ack, tag) in cases {
        let (theirs, ours) = on_both(|port| answer_with(port, qos, ack, tag)).await;
        assert!(theirs, "mosquitto kept the connection after {tag}");
        assert_eq!(ours, theirs, "{tag}");
    }
}

#[tokio::test]
async fn credentials_sent_to_a_broker_without_users_are_ignored() {
    let login = raw::connect("with-login", true, 30, Some(("hmi", "secret")), None);
    let (theirs, ours) = on_both(|port| {
        let login = login.clone();
        async move { raw::connect_raw(port, &login).await.1 }
    })
    .await;
    assert_eq!(theirs, ConnectOutcome::connack(0));
    assert_eq!(ours, theirs);
}

/// What a topic of `levels` levels meets: PUBLISH, SUBSCRIBE and
/// UNSUBSCRIBE, each on a connection of its own; `true` where it closed.
async fn deep_topic(port: u16, levels: usize) -> [bool; 3] {
    let topic = vec!["l"; levels].join("/");
    let packets = [
        raw::publish(&topic, b"x", 0, false, 0),
        raw::subscribe(1, &topic, 0),
        raw::unsubscribe(1, &topic),
    ];
    let mut closed = [false; 3];
    for (i, p) in packets.iter().enumerate() {
        let mut c = Raw::connect(port, &format!("deep-{levels}-{i}")).await;
        c.send(p).await;
        closed[i] = raw::closed_within(&mut c.s, Duration::from_millis(700)).await;
    }
    closed
}

#[tokio::test]
async fn topics_past_200_separators_close_the_connection() {
    let (theirs, ours) =
        on_both(|port| async move { (deep_topic(port, 201).await, deep_topic(port, 202).await) })
            .await;
    assert_eq!(
        theirs,
        ([false; 3], [true; 3]),
        "mosquitto: 201 levels pass, 202 do not"
    );
    assert_eq!(ours, theirs);
}

/// A bridge connects with level 0x84; (CONNACK, whether another client got
/// its message, whether it got its own back).
async fn bridge_in(port: u16) -> (ConnectOutcome, bool, bool) {
    let (s, outcome) =
        raw::connect_raw(port, &raw::connect_as(b"MQTT", 0x84, "remote-bridge")).await;
    let mut bridge = Raw { s };
    if outcome != ConnectOutcome::connack(0) {
        return (outcome, false, false);
    }
    assert_eq!(bridge.subscribe(1, "loop/#", 1).await, 1);
    let mut other = Raw::connect(port, "bridge-watcher").await;
    assert_eq!(other.subscribe(1, "loop/#", 1).await, 1);
    bridge
        .send(&raw::publish("loop/x", b"from-bridge", 1, false, 3))
        .await;
    bridge.expect(raw::PUBACK, SECS).await;
    let seen = other.publish_in(SECS).await.payload == b"from-bridge";
    let echoed = !bridge
        .publishes_until_quiet(Duration::from_millis(500))
        .await
        .is_empty();
    (outcome, seen, echoed)
}

#[tokio::test]
async fn a_mosquitto_bridge_connects_and_gets_no_echo() {
    let (theirs, ours) = on_both(bridge_in).await;
    assert_eq!(theirs, (ConnectOutcome::connack(0), true, false));
    assert_eq!(ours, theirs);
}

/// A client publishes a retained `$SYS/broker/version`; whether a
/// subscriber then gets the spoofed value.
async fn spoof_sys(port: u16) -> bool {
    let mut p = Raw::connect(port, "sys-spoofer").await;
    p.send(&raw::publish("$SYS/broker/version", b"spoofed", 1, true, 1))
        .await;
    p.expect(raw::PUBACK, SECS).await;
    let mut reader = Raw::connect(port, "sys-reader").await;
    reader.subscribe(1, "$SYS/broker/version", 0).await;
    reader
        .publishes_until_quiet(Duration::from_millis(500))
        .await
        .iter()
        .any(|m| m.payload == b"spoofed")
}

#[tokio::test]
async fn a_client_cannot_publish_to_sys() {
    let (theirs, ours) = on_both(spoof_sys).await;
    assert!(!theirs, "mosquitto delivered a spoofed $SYS message");
    assert_eq!(ours, theirs);
}
