//! A SIGKILL in the middle of a drain: nothing committed is lost, and the
//! QoS 1 messages sent again after the restart are at most the in-flight
//! window (a message keeps its window slot until its row is deleted).

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::{SECS, outbox_messages, publish_locally, wait_outbox};
use crate::support::{ConfigDir, Gateway, Msg, Sub};
use crate::upstream::{Mosquitto, Proxy, gateway_yaml};

const TOPIC: &str = "site/gw1/hmi/v";
const BACKLOG: i64 = 20_000;
const WINDOW: usize = 50;

fn value(m: &Msg) -> i64 {
    m.text().parse().expect("integer payload")
}

#[tokio::test]
async fn qos1_duplicates_after_sigkill_mid_drain_are_bounded_by_the_window() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    proxy.cut();
    let mut up = Sub::connect(broker.port, &["site/gw1/hmi/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let yaml = gateway_yaml(&url, "1s", &format!("  inflight: {WINDOW}"));
    let mut gw = Gateway::start(&yaml);
    publish_locally(gw.port, "gw1/hmi/v", BACKLOG as usize, |i| {
        i.to_string().into_bytes()
    })
    .await;
    wait_outbox(&gw, BACKLOG as u64).await;

    // the drain starts; kill the gateway once a tenth has arrived upstream
    proxy.restore();
    let mut got: Vec<i64> = Vec::new();
    while got.len() < BACKLOG as usize / 10 {
        let m = up.next(Duration::from_secs(20)).await;
        if m.topic == TOPIC {
            got.push(value(&m));
        }
    }
    gw.kill();
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    drop(gw);
    let left = outbox_messages(&cfg);
    assert!(
        left > 0 && left < BACKLOG as u64,
        "the kill did not land mid-drain ({left} rows left)"
    );

    let gw = Gateway::spawn(cfg, port, &[]);
    let mut have: BTreeSet<i64> = got.iter().copied().collect();
    while have.len() < BACKLOG as usize {
        let Some(m) = up.try_next(Duration::from_secs(30)).await else {
            panic!(
                "{} of {BACKLOG} arrived; log:\n{}",
                have.len(),
                gw.log_text()
            );
        };
        if m.topic == TOPIC {
            let v = value(&m);
            got.push(v);
            have.insert(v);
        }
    }
    assert_eq!(have, (0..BACKLOG).collect::<BTreeSet<i64>>());
    let dups = got.len() - have.len();
    // the measurement docs/uplink.md quotes
    eprintln!(
        "QoS 1 duplicates after a SIGKILL mid-drain: {dups} (window {WINDOW}, {left} rows were left)"
    );
    assert!(
        dups <= WINDOW,
        "{dups} duplicates: more than the in-flight window of {WINDOW}"
    );
    let mut gw = gw;
    assert!(gw.terminate(SECS).success());
}
