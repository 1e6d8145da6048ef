//! Home Assistant discovery through the uplink: with a `forward` filter on
//! the prefix the configs reach a real upstream mosquitto (for a Home
//! Assistant elsewhere), and a birth message published upstream comes back
//! through a `commands` filter and has them re-sent.

use std::time::Duration;

use rumqttc::QoS;

use crate::support::{Gateway, Sub};
use crate::upstream::Mosquitto;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test]
async fn discovery_reaches_upstream_and_an_upstream_birth_resends_it() {
    let up = Mosquitto::start();
    let gw = Gateway::start(&format!(
        r#"
gateway:
  id: gw-far
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
homeassistant: {{ prefix: homeassistant }}
uplink:
  url: "mqtt://127.0.0.1:{}"
  client_id: gw-far
  forward:
    - {{ filter: "homeassistant/#", qos: 1 }}
    - {{ filter: "gw-far/#", qos: 1 }}
  commands:
    - {{ filter: "homeassistant/status" }}
devices:
  - name: tank
    kind: simulated
    poll: 200ms
    points:
      - {{ name: level, signal: sine, period: 10s, min: 0, max: 100, unit: "%" }}
"#,
        up.port
    ));
    let level = "homeassistant/sensor/gw-far_tank_level/config";
    let mut far = Sub::connect(up.port, &["homeassistant/+/+/config"], QoS::AtLeastOnce).await;
    let first = far.wait_topic(level, SECS).await;
    assert_eq!(first.json()["state_topic"], "gw-far/tank/level");
    assert_eq!(
        first.json()["availability"][1]["topic"],
        "gw-far/status/tank"
    );
    // the state and availability topics go upstream too
    let mut data = Sub::connect(
        up.port,
        &["gw-far/tank/level", "gw-far/status/tank"],
        QoS::AtLeastOnce,
    )
    .await;
    data.wait_topic("gw-far/tank/level", SECS).await;
    data.wait_topic("gw-far/status/tank", SECS).await;

    // Home Assistant (upstream) comes online: the configs come again
    far.seen.clear();
    far.client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .expect("publish birth upstream");
    let again = far.wait_for(SECS, |m| m.topic == level && !m.retain).await;
    assert_eq!(again.json(), first.json());
    assert!(
        gw.log_text().contains("discovery re-sent"),
        "{}",
        gw.log_text()
    );
}
