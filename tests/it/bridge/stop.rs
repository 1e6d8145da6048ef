//! The gateway's stop with the uplink up while a local client publishes
//! QoS 1 at full speed: every message the embedded broker acknowledged is
//! upstream or in the outbox afterwards, and the stop fits well inside
//! the unit's `TimeoutStopSec=30s`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rumqttc::{Event, Incoming, Outgoing, QoS};

use crate::support::{Gateway, Sub, fieldgate, options};
use crate::upstream::{Mosquitto, gateway_yaml};

/// The whole stop, at most (TimeoutStopSec=30s less a margin).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Publishes `seq` payloads on `gw1/hmi/load` as fast as the broker takes
/// them until the connection ends; returns the acknowledged numbers.
async fn publish_until_closed(port: u16) -> BTreeSet<u64> {
    let (client, mut el) = rumqttc::AsyncClient::new(options("stop-pub", port), 200);
    let feeder = tokio::spawn(async move {
        for seq in 0u64.. {
            let sent = client
                .publish("gw1/hmi/load", QoS::AtLeastOnce, false, seq.to_string())
                .await;
            if sent.is_err() {
                return;
            }
        }
    });
    let mut pkids = HashMap::new();
    let mut acked = BTreeSet::new();
    let mut next = 0u64;
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                // one feeder: packets go out in publish order
                pkids.insert(pkid, next);
                next += 1;
            }
            Ok(Event::Incoming(Incoming::PubAck(a))) => {
                if let Some(seq) = pkids.remove(&a.pkid) {
                    acked.insert(seq);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    feeder.abort();
    acked
}

#[tokio::test]
async fn sigterm_under_full_speed_qos1_keeps_every_acknowledged_message() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/hmi/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&gateway_yaml(&url, "1h", ""));
    let publisher = tokio::spawn(publish_until_closed(gw.port));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let status = gw.wait_exit(STOP_WITHIN + Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(status.success(), "exit {status:?}; log:\n{}", gw.log_text());
    assert!(took < STOP_WITHIN, "the stop took {took:?}");
    let acked = tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("the publisher's connection ends with the gateway")
        .expect("publisher");
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());

    // upstream: everything that arrives until it has been quiet for 1 s
    let mut upstream = BTreeSet::new();
    while let Some(m) = up.try_next(Duration::from_secs(1)).await {
        if let Ok(n) = m.text().parse::<u64>() {
            upstream.insert(n);
        }
    }
    let out = fieldgate(&["outbox", "list", "-n", "10000000", "-c", gw.cfg.path_str()]);
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    let stored: BTreeSet<u64> = listed
        .lines()
        .filter(|l| l.contains("site/gw1/hmi/load"))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|n| !upstream.contains(n) && !stored.contains(n))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages neither upstream nor in the outbox, first {:?}; log:\n{}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)],
        gw.log_text()
    );
}
