//! Sessions and wills: clean_session and the session-present flag,
//! persistent sessions, redelivery with DUP, client id takeover, wills.

use std::time::Duration;

use rumqttc::{LastWill, Packet, QoS};

use super::raw::{self, Raw, Will};
use super::{Client, SECS, opts, yaml};
use crate::support::{Gateway, Sub};

const QUIET: Duration = Duration::from_millis(500);

/// Sends DISCONNECT and waits until the broker closed the connection.
async fn disconnect(mut c: Raw) {
    c.send(&raw::DISCONNECT).await;
    assert!(
        raw::closed_within(&mut c.s, SECS).await,
        "still open after DISCONNECT"
    );
}

/// MQTT-3.1.2-8: the will is published on an abrupt close;
/// MQTT-3.1.2-10: never after DISCONNECT.
#[tokio::test]
async fn last_will_on_abrupt_disconnect_and_not_on_disconnect() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["c/will/#"], QoS::AtLeastOnce).await;

    let mut o = opts("c-will-abrupt", gw.port);
    o.set_last_will(LastWill::new(
        "c/will/abrupt",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let abrupt = Client::connect(o).await;
    let mut o = opts("c-will-clean", gw.port);
    o.set_last_will(LastWill::new(
        "c/will/clean",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let clean = Client::connect(o).await;

    clean.disconnect().await;
    abrupt.drop_abruptly().await;
    let m = sub.wait_topic("c/will/abrupt", SECS).await;
    assert_eq!(m.text(), "gone");
    let extra = sub.try_next(QUIET).await;
    assert!(
        sub.seen
            .iter()
            .chain(extra.iter())
            .all(|m| m.topic != "c/will/clean"),
        "a will was published after a clean DISCONNECT"
    );
}

/// MQTT-3.1.2-4 / MQTT-3.1.2-5: a persistent session keeps its
/// subscriptions and queues QoS 1 and 2 messages while offline.
#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_qos_1_and_2() {
    let gw = Gateway::start(&yaml(""));
    let mut o = opts("c-persist", gw.port);
    o.set_clean_session(false);
    let mut session = Client::connect(o.clone()).await;
    session
        .client
        .subscribe("c/persist/#", QoS::ExactlyOnce)
        .await
        .expect("queue subscribe");
    session
        .wait_incoming(SECS, |p| matches!(p, Packet::SubAck(_)))
        .await;
    session.disconnect().await;

    let mut publisher = Client::connect(opts("c-pub-persist", gw.port)).await;
    for (i, q) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::AtLeastOnce),
    ] {
        publisher
            .client
            .publish(format!("c/persist/{i}"), q, false, format!("offline-{i}"))
            .await
            .expect("queue publish");
        publisher
            .wait_incoming(SECS, |p| {
                matches!(p, Packet::PubAck(_) | Packet::PubComp(_))
            })
            .await;
    }

    let (mut back, session_present) = Client::try_connect(o).await.expect("reconnect");
    assert!(session_present, "CONNACK session present flag");
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Packet::Publish(p) = back
            .wait_incoming(SECS, |p| matches!(p, Packet::Publish(_)))
            .await
        {
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    assert_eq!(got, ["offline-1", "offline-2", "offline-3"]);
}

/// MQTT-3.1.4-2: a second connection with the same client id takes over.
#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let gw = Gateway::start(&yaml(""));
    let mut first = Client::connect(opts("c-dup", gw.port)).await;
    let mut second = Client::connect(opts("c-dup", gw.port)).await;
    first.wait_closed(SECS).await;
    second
        .client
        .subscribe("c/dup", QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    second
        .wait_incoming(SECS, |p| matches!(p, Packet::SubAck(_)))
        .await;
    second
        .client
        .publish("c/dup", QoS::AtLeastOnce, false, "still here")
        .await
        .expect("queue publish");
    second
        .wait_incoming(
            SECS,
            |p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"still here"),
        )
        .await;
}

/// MQTT-3.2.2-3: clean_session=0 without a stored session: session present 0;
/// MQTT-3.2.2-2: with one: 1; MQTT-3.2.2-1: clean_session=1: 0, and
/// MQTT-3.1.2-6: the clean session discards the stored one (its
/// subscriptions are gone when clean_session=0 is used again).
#[tokio::test]
async fn session_present_follows_clean_session_mqtt_3_2_2_1_to_3() {
    let gw = Gateway::start(&yaml(""));
    let persistent = raw::connect("s-sp", false, 30, None, None);
    let (mut c, sp) = Raw::open(gw.port, &persistent).await;
    assert!(
        !sp,
        "first clean_session=0 connect: no session yet (MQTT-3.2.2-3)"
    );
    assert_eq!(c.subscribe(1, "s/sp", 1).await, 1);
    disconnect(c).await;

    let (c, sp) = Raw::open(gw.port, &persistent).await;
    assert!(sp, "stored session resumed (MQTT-3.2.2-2)");
    disconnect(c).await;

    let (c, sp) = Raw::open(gw.port, &raw::connect("s-sp", true, 30, None, None)).await;
    assert!(!sp, "clean_session=1 (MQTT-3.2.2-1)");
    disconnect(c).await;

    let (mut c, sp) = Raw::open(gw.port, &persistent).await;
    assert!(
        !sp,
        "the clean session discarded the stored one (MQTT-3.1.2-6)"
    );
    c.send(&raw::publish("s/sp", b"x", 0, false, 0)).await;
    c.send(&raw::PINGREQ).await;
    let (first, _) = c.next(SECS).await.expect("PINGRESP");
    assert_eq!(
        first,
        raw::PINGRESP,
        "the discarded subscription still delivered"
    );
}

/// MQTT-4.4.0-1: on resuming a session the broker re-sends unacknowledged
/// PUBLISHes with DUP set and the same packet ids, and unacknowledged PUBRELs.
#[tokio::test]
async fn unacknowledged_messages_are_redelivered_with_dup_mqtt_4_4_0_1() {
    let gw = Gateway::start(&yaml(""));
    let persistent = raw::connect("s-dup", false, 30, None, None);
    let (mut c, _) = Raw::open(gw.port, &persistent).await;
    assert_eq!(c.subscribe(1, "s/dup/#", 2).await, 2);
    let mut publisher = Client::connect(opts("s-pub-dup", gw.port)).await;
    for (t, q) in [
        ("a", QoS::AtLeastOnce),
        ("b", QoS::ExactlyOnce),
        ("c", QoS::ExactlyOnce),
    ] {
        publisher
            .publish_acked(&format!("s/dup/{t}"), q, false, t)
            .await;
    }
    let mut first = Vec::new();
    for _ in 0..3 {
        let p = c.publish_in(SECS).await;
        assert!(!p.dup, "first delivery with DUP: {p:?}");
        first.push(p);
    }
    first.sort_by(|a, b| a.topic.cmp(&b.topic));
    let id = |i: usize| first[i].pkid.expect("packet id");
    // "c": PUBREC sent, PUBREL received, PUBCOMP never sent
    c.send(&raw::ack(raw::PUBREC, id(2))).await;
    assert_eq!(c.expect(raw::PUBREL, SECS).await, id(2).to_be_bytes());
    drop(c);

    let (mut c, sp) = Raw::open(gw.port, &persistent).await;
    assert!(sp, "session present");
    let mut again = Vec::new();
    let mut pubrel = None;
    while again.len() < 2 || pubrel.is_none() {
        match c.next(SECS).await.expect("redelivery") {
            (raw::PUBREL, body) => pubrel = Some(body),
            (f, body) => again.extend(raw::Publish::parse(f, &body)),
        }
    }
    again.sort_by(|a, b| a.topic.cmp(&b.topic));
    for (p, orig) in again.iter().zip(&first) {
        assert!(p.dup, "redelivered without DUP: {p:?}");
        assert_eq!(
            (&p.topic, p.qos, p.pkid, &p.payload),
            (&orig.topic, orig.qos, orig.pkid, &orig.payload)
        );
    }
    assert_eq!(
        pubrel.expect("PUBREL"),
        id(2).to_be_bytes(),
        "PUBREL re-sent"
    );
    c.send(&raw::ack(raw::PUBACK, id(0))).await;
    c.send(&raw::ack(raw::PUBREC, id(1))).await;
    assert_eq!(c.expect(raw::PUBREL, SECS).await, id(1).to_be_bytes());
    c.send(&raw::ack(raw::PUBCOMP, id(1))).await;
    c.send(&raw::ack(raw::PUBCOMP, id(2))).await;
    assert!(
        c.publishes_until_quiet(QUIET).await.is_empty(),
        "more after everything was acknowledged"
    );
}

/// MQTT-3.1.4-2: a CONNECT with the client id of a connected client closes
/// the old connection, and its will is published (MQTT-3.1.2-8), retained
/// when the will retain flag is set (MQTT-3.1.2-17).
#[tokio::test]
async fn takeover_closes_the_old_connection_and_publishes_its_will_mqtt_3_1_4_2() {
    let gw = Gateway::start(&yaml(""));
    let mut watcher = Sub::connect(gw.port, &["s/tw/#"], QoS::AtLeastOnce).await;
    let will = Will {
        topic: "s/tw/old",
        payload: b"taken over",
        qos: 1,
        retain: true,
    };
    let (mut old, _) = Raw::open(gw.port, &raw::connect("s-tw", true, 30, None, Some(will))).await;
    let (mut new, _) = Raw::open(gw.port, &raw::connect("s-tw", true, 30, None, None)).await;
    assert!(
        raw::closed_within(&mut old.s, SECS).await,
        "old connection still open"
    );
    let m = watcher.wait_topic("s/tw/old", SECS).await;
    assert_eq!(m.text(), "taken over");
    new.send(&raw::PINGREQ).await;
    new.expect(raw::PINGRESP, SECS).await;
    let mut late = Sub::connect(gw.port, &["s/tw/old"], QoS::AtLeastOnce).await;
    let m = late.wait_topic("s/tw/old", SECS).await;
    assert!(m.retain, "a retained will is stored as a retained message");
}
