//! QoS 2 through the bridge: no duplicates across uplink outages, and the
//! duplicates a SIGKILL can cause, measured and bounded.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rumqttc::QoS;

use crate::bridge::{
    SECS, collect_until, local_values, wait_local_value, wait_reading, wait_upstream,
};
use crate::support::{ConfigDir, Gateway, Sub, fill};
use crate::upstream::{Mosquitto, Proxy, gateway_yaml_from};

/// The in-flight window of these tests.
const WINDOW: usize = 100;

fn qos2_yaml(url: &str, start: i64) -> String {
    gateway_yaml_from(
        url,
        "5ms",
        start,
        "gw1/dev/#",
        &format!("  inflight: {WINDOW}"),
    )
    .replace("qos: 1 }", "qos: 2 }")
}

fn duplicates(got: &[i64]) -> usize {
    got.len() - got.iter().collect::<BTreeSet<_>>().len()
}

#[tokio::test]
async fn qos2_outages_cause_no_duplicates() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::ExactlyOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut gw = Gateway::start(&qos2_yaml(&url, 0));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    wait_reading(&mut up).await;
    let mut seen = BTreeSet::new();
    for round in 1..=3 {
        proxy.cut();
        wait_local_value(&mut local, 150 * round, &mut seen).await;
        proxy.restore();
        wait_local_value(&mut local, 150 * round + 50, &mut seen).await;
        wait_upstream(&mut up, 150 * round + 50).await;
    }
    assert!(gw.terminate(SECS).success());
    seen.extend(local_values(&mut local, Duration::from_millis(200)).await);
    let want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    assert_eq!(duplicates(&got), 0, "QoS 2 duplicated across outages");
}

#[tokio::test]
async fn qos2_duplicates_across_sigkill_are_bounded_by_the_window() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::ExactlyOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&qos2_yaml(&url, 0));
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    wait_reading(&mut up).await;
    let mut seen = BTreeSet::new();
    wait_local_value(&mut local, 300, &mut seen).await;
    gw.signal(Signal::SIGKILL);
    let _ = gw.wait_exit(SECS);
    seen.extend(local_values(&mut local, Duration::from_millis(100)).await);
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    let data = cfg.dir.path().join("data");
    std::fs::write(&cfg.path, fill(&qos2_yaml(&url, 1_000_000), port, &data)).expect("config");
    drop(gw);
    let mut gw = Gateway::spawn(cfg, port, &[]);
    let mut want: BTreeSet<i64> = (0..=*seen.last().expect("values")).collect();
    want.insert(1_000_010);
    let got = collect_until(&mut up, &want, Duration::from_secs(30), &gw).await;
    let old: Vec<i64> = got.iter().copied().filter(|v| *v < 1_000_000).collect();
    let dups = duplicates(&old);
    // the measurement the README quotes
    eprintln!("QoS 2 duplicates across a SIGKILL: {dups} (in-flight window {WINDOW})");
    assert!(
        dups <= WINDOW,
        "{dups} duplicates: more than the in-flight window"
    );
    assert!(gw.terminate(SECS).success());
}
