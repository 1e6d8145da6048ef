//! Large messages through an outage: the bridge caps the bytes it reads
//! ahead and keeps unacknowledged (see src/bridge/forward/), and still sends every
//! message, in order.

use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::{SECS, publish_locally, wait_outbox};
use crate::support::{Gateway, Sub};
use crate::upstream::{Mosquitto, Proxy, gateway_yaml};

const COUNT: usize = 120;
const SIZE: usize = 200 * 1024;

/// Payload `i`: its number, then filler up to [`SIZE`].
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:06}").into_bytes();
    p.resize(SIZE, b'.');
    p
}

#[tokio::test]
async fn large_messages_after_an_outage_all_arrive_in_order() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    proxy.cut();
    let mut up = Sub::connect(broker.port, &["site/gw1/hmi/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    // every message is committed before the broker acknowledges it, so a
    // burst that outruns the outbox slows the publisher instead of losing
    let yaml = gateway_yaml(&url, "1s", "");
    let mut gw = Gateway::start(&yaml);
    publish_locally(gw.port, "gw1/hmi/blob", COUNT, payload).await;
    wait_outbox(&gw, COUNT as u64).await;
    proxy.restore();
    let mut got = Vec::new();
    while got.len() < COUNT {
        let Some(m) = up.try_next(Duration::from_secs(30)).await else {
            panic!("{} of {COUNT} arrived; log:\n{}", got.len(), gw.log_text());
        };
        if m.topic != "site/gw1/hmi/blob" {
            continue;
        }
        assert_eq!(m.payload.len(), SIZE, "payload cut or padded");
        let n: usize = String::from_utf8_lossy(&m.payload[..6])
            .parse()
            .expect("number");
        got.push(n);
    }
    assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
    assert!(gw.terminate(SECS).success());
}
