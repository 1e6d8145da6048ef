//! MQTT 5 state in `broker.db` across a SIGKILL of the real binary: a
//! session's expiry interval and the time its client was away before the
//! crash (MQTT-3.1.2-23: the session ends when the interval has passed,
//! restart or not), a queued message's properties, subscription
//! identifier and remaining expiry (MQTT-3.3.2-6), a retained message's
//! properties and expiry, a subscription's options.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::{QoS, v5 as r};

use super::client5::{Client5, props};
use super::{SECS, yaml};
use crate::support::Gateway;

fn expiring(secs: u32) -> r::ConnectProperties {
    let mut p = props();
    p.session_expiry_interval = Some(secs);
    p
}

fn publish_props(expiry: Option<u32>) -> r::PublishProperties {
    r::PublishProperties {
        message_expiry_interval: expiry,
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![("site".into(), "north".into()), ("site".into(), "2".into())],
        ..Default::default()
    }
}

/// Sends DISCONNECT and waits for the broker to close: by then the
/// broker has detached the session (it closes after that).
async fn leave(mut c: Client5) {
    c.send(r::Packet::Disconnect(r::Disconnect::new(
        r::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    while c.next(SECS).await.is_some() {}
}

#[tokio::test]
async fn queued_and_retained_messages_keep_properties_and_expiry_across_sigkill() {
    let gw = Gateway::start(&yaml(""));
    let (mut c, _) = Client5::connect(gw.port, "p5", true, expiring(3_600)).await;
    let mut f = r::Filter::new("p5/#", QoS::AtLeastOnce);
    f.nolocal = true;
    c.subscribe(1, f, Some(77)).await;
    leave(c).await;

    let (mut p, _) = Client5::connect(gw.port, "p5-pub", true, props()).await;
    p.publish(
        "p5/long",
        b"long",
        QoS::AtLeastOnce,
        1,
        Some(publish_props(Some(600))),
    )
    .await;
    p.publish(
        "p5/short",
        b"short",
        QoS::AtLeastOnce,
        2,
        Some(publish_props(Some(2))),
    )
    .await;
    p.publish(
        "p5/never",
        b"never",
        QoS::AtLeastOnce,
        3,
        Some(publish_props(None)),
    )
    .await;
    let mut ret = publish_props(Some(600));
    ret.payload_format_indicator = Some(1);
    let mut retained = r::Publish::new("ret5/t", QoS::AtLeastOnce, "kept", Some(ret));
    retained.retain = true;
    retained.pkid = 4;
    p.send(r::Packet::Publish(retained)).await;
    for _ in 0..4 {
        assert!(matches!(p.next(SECS).await, Some(r::Packet::PubAck(_))));
    }
    drop(p);
    let published = Instant::now();

    let gw = gw.sigkill_and_restart(&[]);
    // the short one's 2 s pass while the gateway is down or starting
    let left = Duration::from_millis(2_100).saturating_sub(published.elapsed());
    tokio::time::sleep(left).await;
    let (mut c, ack) = Client5::connect(gw.port, "p5", false, expiring(3_600)).await;
    assert!(ack.session_present, "the session survived the SIGKILL");
    let got = c.publishes_until_quiet(Duration::from_millis(500)).await;
    let topics: Vec<&str> = got
        .iter()
        .map(|p| std::str::from_utf8(&p.topic).expect("utf-8"))
        .collect();
    assert_eq!(
        topics,
        ["p5/long", "p5/never"],
        "the expired one is not sent (MQTT-3.3.2-5)"
    );
    let long = got[0].properties.as_ref().expect("properties kept");
    let want = publish_props(None);
    assert_eq!(long.content_type, want.content_type);
    assert_eq!(long.response_topic, want.response_topic);
    assert_eq!(long.correlation_data, want.correlation_data);
    assert_eq!(
        long.user_properties, want.user_properties,
        "in order (MQTT-3.3.2-18)"
    );
    assert_eq!(long.subscription_identifiers, vec![77], "MQTT-3.3.4-3");
    let remaining = long.message_expiry_interval.expect("the interval left");
    assert!(
        (590..=598).contains(&remaining),
        "600 s minus the time waited, got {remaining} (MQTT-3.3.2-6)"
    );
    let never = got[1].properties.as_ref().expect("properties kept");
    assert_eq!(never.message_expiry_interval, None);

    // the subscription's options came back: no local still holds
    c.publish("p5/mine", b"own", QoS::AtMostOnce, 0, None).await;
    let (mut other, _) = Client5::connect(gw.port, "p5-late", true, props()).await;
    other
        .subscribe(1, r::Filter::new("ret5/#", QoS::AtLeastOnce), None)
        .await;
    let r5 = other.publish_in(SECS).await;
    assert!(r5.retain);
    let rp = r5.properties.expect("retained properties kept");
    assert_eq!(rp.payload_format_indicator, Some(1));
    assert_eq!(rp.user_properties, publish_props(None).user_properties);
    assert!(rp.message_expiry_interval.is_some_and(|s| s <= 600));
    assert!(
        c.publishes_until_quiet(Duration::from_millis(300))
            .await
            .is_empty(),
        "no local survived the restart (MQTT-3.8.3-3)"
    );
}

#[tokio::test]
async fn a_session_expiry_counts_the_time_away_before_a_sigkill() {
    let gw = Gateway::start(&yaml(""));
    let (mut short, _) = Client5::connect(gw.port, "away-short", true, expiring(2)).await;
    short
        .subscribe(1, r::Filter::new("a/#", QoS::AtLeastOnce), None)
        .await;
    leave(short).await;
    let (mut long, _) = Client5::connect(gw.port, "away-long", true, expiring(3_600)).await;
    long.subscribe(1, r::Filter::new("a/#", QoS::AtLeastOnce), None)
        .await;
    leave(long).await;
    let left_at = Instant::now();
    // acknowledged once committed, and the store commits in order: the
    // sessions' clocks pushed at their disconnects are on disk before it
    let (mut p, _) = Client5::connect(gw.port, "away-pub", true, props()).await;
    p.publish("a/x", b"x", QoS::AtLeastOnce, 1, None).await;
    assert!(matches!(p.next(SECS).await, Some(r::Packet::PubAck(_))));
    let gw = gw.sigkill_and_restart(&[]);
    // 2 s after the client left, restart or not, its session is over
    tokio::time::sleep(Duration::from_millis(2_100).saturating_sub(left_at.elapsed())).await;
    let (_s, ack) = Client5::connect(gw.port, "away-short", false, expiring(2)).await;
    assert!(
        !ack.session_present,
        "a session of 2 s expiry must not come back with the 2-day cap after a restart"
    );
    let (_l, ack) = Client5::connect(gw.port, "away-long", false, expiring(3_600)).await;
    assert!(ack.session_present, "an hour's session is kept");
}
