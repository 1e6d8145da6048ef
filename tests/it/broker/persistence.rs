//! `data_dir/broker.db`: persistent sessions and retained messages survive
//! a SIGKILL of the real binary (no shutdown hook runs).
//! MQTT-3.1.2-4 / MQTT-3.1.2-5 (session state kept) and MQTT-3.3.1-5
//! (retained messages kept) across a broker crash.

use rumqttc::QoS;

use super::raw::{self, Raw};
use super::{Client, SECS, opts, yaml};
use crate::support::{Gateway, Sub};

#[tokio::test]
async fn sessions_queued_messages_and_retained_survive_sigkill() {
    let gw = Gateway::start(&yaml(""));
    let persistent = raw::connect("p-sess", false, 30, None, None);
    let (mut c, _) = Raw::open(gw.port, &persistent).await;
    assert_eq!(c.subscribe(1, "p/q/#", 2).await, 2);
    c.send(&raw::DISCONNECT).await;
    assert!(raw::closed_within(&mut c.s, SECS).await);

    let mut publisher = Client::connect(opts("p-pub", gw.port)).await;
    publisher
        .publish_acked("p/ret", QoS::AtLeastOnce, true, "kept")
        .await;
    // acknowledged, so durable: queued for the offline session
    publisher
        .publish_acked("p/q/1", QoS::AtLeastOnce, false, "before-1")
        .await;
    publisher
        .publish_acked("p/q/2", QoS::ExactlyOnce, false, "before-2")
        .await;
    drop(publisher);

    let gw = gw.sigkill_and_restart(&[]);
    // the subscription survived: a message published now is queued too
    let mut publisher = Client::connect(opts("p-pub-2", gw.port)).await;
    publisher
        .publish_acked("p/q/3", QoS::AtLeastOnce, false, "after-3")
        .await;

    let (mut c, sp) = Raw::open(gw.port, &persistent).await;
    assert!(sp, "session present after the restart (MQTT-3.2.2-2)");
    // the three arrive back to back: answer each packet as it comes
    // (PUBREL may arrive after a later PUBLISH)
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + SECS;
    let mut completed = false;
    while got.len() < 3 || !completed {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((first, body)) = c.next(left).await else {
            panic!("closed after {got:?}");
        };
        if first == raw::PUBREL {
            c.send(&raw::ack(
                raw::PUBCOMP,
                u16::from_be_bytes([body[0], body[1]]),
            ))
            .await;
            completed = true;
            continue;
        }
        let Some(p) = raw::Publish::parse(first, &body) else {
            continue;
        };
        match p.qos {
            1 => c.send(&raw::ack(raw::PUBACK, p.pkid.expect("id"))).await,
            2 => c.send(&raw::ack(raw::PUBREC, p.pkid.expect("id"))).await,
            _ => {}
        }
        got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.qos));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("after-3".to_string(), 1),
            ("before-1".to_string(), 1),
            ("before-2".to_string(), 2)
        ]
    );

    let mut late = Sub::connect(gw.port, &["p/ret"], QoS::AtLeastOnce).await;
    let m = late.wait_topic("p/ret", SECS).await;
    assert_eq!((m.text().as_str(), m.retain), ("kept", true));
    assert!(
        gw.cfg.dir.path().join("data").join("broker.db").exists(),
        "data_dir/broker.db"
    );
}
