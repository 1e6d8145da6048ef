//! Python paho-mqtt (v2 API) with its defaults: connect (keep-alive 60,
//! MQTT 3.1.1), SUBSCRIBE at QoS 2, PUBLISH at QoS 0/1/2, each received at
//! min(publish, subscription) = its own QoS (MQTT-3.8.4-6). The client is
//! `paho_client.py` beside this file.

use std::time::Duration;

use super::SECS;
use super::yaml;
use crate::support::{Gateway, Sub};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/broker/paho_client.py"
);

/// `true` if `python3` can import paho.mqtt; otherwise says why the test is skipped.
fn paho_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: python3 cannot import paho.mqtt (.ci/run installs paho-mqtt 2.x)");
    }
    ok
}

#[tokio::test]
async fn paho_subscribes_and_publishes_qos_0_1_2() {
    if !paho_available() {
        return;
    }
    let gw = Gateway::start(&yaml(""));
    // a rumqttc client sees what paho publishes, too
    let mut other = Sub::connect(gw.port, &["paho/#"], rumqttc::QoS::ExactlyOnce).await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("python3")
            .args([SCRIPT, &gw.port.to_string(), "paho-it"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("paho client finished within 30s")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("paho JSON");
    assert_eq!(r["connect"], "Success", "{r}");
    assert_eq!(r["granted"], serde_json::json!([2]), "{r}");
    for q in 0..=2u8 {
        let m = &r["received"][format!("paho/{q}")];
        assert_eq!(m["payload"], format!("q{q}"), "{r}");
        assert_eq!(m["qos"], q, "{r}");
        assert_eq!(m["retain"], false, "{r}");
        assert_eq!(
            other.wait_topic(&format!("paho/{q}"), SECS).await.text(),
            format!("q{q}")
        );
    }
}
