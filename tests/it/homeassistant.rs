//! Home Assistant MQTT discovery, seen by a real MQTT client on the real
//! binary's broker: every config message checked key by key against the
//! options Home Assistant documents for its component, removal of points
//! that left the config (across a restart), and the re-send on the birth
//! message.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;

use crate::support::{ConfigDir, Gateway, Msg, Sub, fill, free_port};

const SECS: Duration = Duration::from_secs(10);

fn config(closed_port: u16, with_counter: bool) -> String {
    let counter = if with_counter {
        "      - { name: counter, signal: counter }\n"
    } else {
        ""
    };
    format!(
        r#"
gateway:
  id: gw-ha
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
homeassistant:
  enabled: true
  prefix: homeassistant
devices:
  - name: tank
    kind: simulated
    poll: 100ms
    points:
      - {{ name: level, signal: sine, period: 10s, min: 0, max: 100, unit: "%" }}
{counter}  - name: plc
    kind: modbus-tcp
    address: "127.0.0.1:{closed_port}"
    poll: 200ms
    timeout: 100ms
    points:
      - {{ name: pump_on, table: coil, address: 0, writable: true }}
      - {{ name: alarm, table: discrete, address: 0 }}
      - {{ name: setpoint, table: holding, address: 1, type: u16, unit: "°C", writable: true }}
      - {{ name: flow, table: input, address: 2, type: f32, unit: "m³/h" }}
      - {{ name: label, table: holding, address: 10, type: string, length: 4, writable: true }}
"#
    )
}

/// Options common to every MQTT entity (Home Assistant's MQTT docs).
const COMMON: &str = "availability availability_mode availability_template availability_topic default_entity_id device enabled_by_default encoding entity_category entity_picture icon json_attributes_template json_attributes_topic name object_id origin payload_available payload_not_available qos unique_id";

/// The words of a space-separated list.
fn words(s: &'static str) -> Vec<&'static str> {
    s.split_whitespace().collect()
}

/// Component-specific options and the required ones (Home Assistant's
/// MQTT sensor, binary sensor, switch, number and text pages).
fn schema(component: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    match component {
        "sensor" => (
            words(
                "device_class expire_after force_update last_reset_value_template options state_class state_topic suggested_display_precision unit_of_measurement value_template",
            ),
            words("state_topic"),
        ),
        "binary_sensor" => (
            words(
                "device_class expire_after force_update off_delay payload_off payload_on state_topic value_template",
            ),
            words("state_topic"),
        ),
        "switch" => (
            words(
                "command_template command_topic device_class optimistic payload_off payload_on retain state_off state_on state_topic value_template",
            ),
            words("command_topic"),
        ),
        "number" => (
            words(
                "command_template command_topic device_class max min mode optimistic payload_reset retain state_topic step unit_of_measurement value_template",
            ),
            words("command_topic"),
        ),
        "text" => (
            words(
                "command_template command_topic max min mode pattern retain state_topic value_template",
            ),
            words("command_topic"),
        ),
        other => panic!("unexpected component {other}"),
    }
}

const DEVICE_KEYS: &str = "configuration_url connections hw_version identifiers manufacturer model model_id name serial_number suggested_area sw_version via_device";

/// Checks one config against the documented options of its component.
fn check_schema(topic: &str, cfg: &Value) {
    let parts: Vec<&str> = topic.split('/').collect();
    assert_eq!(
        parts.len(),
        4,
        "{topic}: <prefix>/<component>/<object_id>/config"
    );
    assert_eq!(parts[3], "config");
    let object_id = parts[2];
    assert!(
        object_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{topic}: object id"
    );
    let (own, required) = schema(parts[1]);
    let obj = cfg.as_object().expect("config is a JSON object");
    for key in obj.keys() {
        assert!(
            words(COMMON).contains(&key.as_str()) || own.contains(&key.as_str()),
            "{topic}: `{key}` is not a documented {} option",
            parts[1]
        );
    }
    for key in required {
        assert!(obj.contains_key(key), "{topic}: required `{key}` missing");
    }
    assert!(cfg["unique_id"].is_string(), "{topic}: unique_id");
    let device = cfg["device"].as_object().expect("device block");
    for key in device.keys() {
        assert!(
            words(DEVICE_KEYS).contains(&key.as_str()),
            "{topic}: device `{key}`"
        );
    }
    assert!(
        device["identifiers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    if let Some(av) = cfg.get("availability") {
        for a in av.as_array().expect("availability list") {
            let a = a.as_object().expect("availability entry");
            assert!(a["topic"].is_string(), "{topic}: availability topic");
            for key in a.keys() {
                assert!(
                    [
                        "topic",
                        "payload_available",
                        "payload_not_available",
                        "value_template"
                    ]
                    .contains(&key.as_str()),
                    "{topic}: availability `{key}`"
                );
            }
        }
        let mode = cfg["availability_mode"].as_str().unwrap_or("latest");
        assert!(["all", "any", "latest"].contains(&mode));
    }
    if let Some(m) = cfg.get("mode") {
        assert!(["auto", "box", "slider"].contains(&m.as_str().unwrap_or("")));
    }
    if let (Some(min), Some(max)) = (cfg.get("min"), cfg.get("max")) {
        assert!(
            min.as_f64().unwrap() < max.as_f64().unwrap(),
            "{topic}: min < max"
        );
    }
    if let Some(step) = cfg.get("step") {
        assert!(step.as_f64().unwrap() >= 0.001, "{topic}: step >= 0.001");
    }
    if let Some(sc) = cfg.get("state_class") {
        assert!(["measurement", "total", "total_increasing"].contains(&sc.as_str().unwrap()));
    }
}

/// Collects retained configs until `want` distinct topics have arrived.
async fn configs(sub: &mut Sub, want: usize) -> BTreeMap<String, Msg> {
    let mut out = BTreeMap::new();
    while out.len() < want {
        let m = sub.next(SECS).await;
        if m.topic.ends_with("/config") {
            out.insert(m.topic.clone(), m);
        }
    }
    out
}

#[tokio::test]
async fn discovery_configs_follow_home_assistant_schema() {
    let gw = Gateway::start(&config(free_port(), true));
    let mut sub = Sub::connect(gw.port, &["homeassistant/+/+/config"], QoS::AtLeastOnce).await;
    let got = configs(&mut sub, 8).await;
    let topics: BTreeSet<&str> = got.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "homeassistant/binary_sensor/gw-ha_status/config",
        "homeassistant/sensor/gw-ha_tank_level/config",
        "homeassistant/sensor/gw-ha_tank_counter/config",
        "homeassistant/switch/gw-ha_plc_pump_on/config",
        "homeassistant/binary_sensor/gw-ha_plc_alarm/config",
        "homeassistant/number/gw-ha_plc_setpoint/config",
        "homeassistant/sensor/gw-ha_plc_flow/config",
        "homeassistant/text/gw-ha_plc_label/config",
    ]
    .into();
    assert_eq!(topics, expected);
    let mut ids = HashSet::new();
    for (topic, m) in &got {
        assert!(m.retain, "{topic} is retained");
        let cfg = m.json();
        check_schema(topic, &cfg);
        assert!(ids.insert(cfg["unique_id"].as_str().unwrap().to_string()));
    }

    // the gateway entity is the device the field devices hang under
    let gwc = got["homeassistant/binary_sensor/gw-ha_status/config"].json();
    assert_eq!(gwc["state_topic"], "gw-ha/status");
    assert_eq!(gwc["payload_on"], "online");
    assert_eq!(gwc["device_class"], "connectivity");
    assert_eq!(gwc["device"]["identifiers"][0], "gw-ha");

    let level = got["homeassistant/sensor/gw-ha_tank_level/config"].json();
    assert_eq!(level["unique_id"], "gw-ha_tank_level");
    assert_eq!(level["state_topic"], "gw-ha/tank/level");
    assert_eq!(level["value_template"], "{{ value_json.value }}");
    assert_eq!(level["unit_of_measurement"], "%");
    assert_eq!(level["device"]["identifiers"][0], "gw-ha_tank");
    assert_eq!(level["device"]["name"], "tank");
    assert_eq!(level["device"]["via_device"], "gw-ha");
    assert_eq!(level["availability_mode"], "all");
    assert_eq!(level["availability"][0]["topic"], "gw-ha/status");
    assert_eq!(level["availability"][1]["topic"], "gw-ha/status/tank");
    assert_eq!(
        level["availability"][1]["value_template"],
        "{{ value_json.state }}"
    );

    let pump = got["homeassistant/switch/gw-ha_plc_pump_on/config"].json();
    assert_eq!(pump["command_topic"], "gw-ha/plc/pump_on/set");
    assert_eq!(pump["state_topic"], "gw-ha/plc/pump_on");
    assert_eq!(pump["payload_on"], "true");
    assert_eq!(pump["payload_off"], "false");
    assert_eq!(pump["state_on"], "ON");
    assert_eq!(pump["device"]["identifiers"][0], "gw-ha_plc");
    assert_eq!(pump["device"]["model"], "modbus-tcp");

    let setpoint = got["homeassistant/number/gw-ha_plc_setpoint/config"].json();
    assert_eq!(setpoint["command_topic"], "gw-ha/plc/setpoint/set");
    assert_eq!(setpoint["unit_of_measurement"], "°C");
    assert_eq!(setpoint["min"], 0.0);
    assert_eq!(setpoint["max"], 65535.0);
    assert_eq!(setpoint["step"], 1.0);
    assert_eq!(
        got["homeassistant/text/gw-ha_plc_label/config"].json()["command_topic"],
        "gw-ha/plc/label/set"
    );

    // what the templates read is what the topics carry
    let mut data = Sub::connect(
        gw.port,
        &[
            "gw-ha/tank/level",
            "gw-ha/status/plc",
            "gw-ha/plc/pump_on/set/result",
        ],
        QoS::AtLeastOnce,
    )
    .await;
    let reading = data.wait_topic("gw-ha/tank/level", SECS).await.json();
    assert!(reading["value"].is_number(), "{reading}");
    let plc = data
        .wait_for(SECS, |m| {
            m.topic == "gw-ha/status/plc" && m.json()["state"] == "offline"
        })
        .await;
    assert_eq!(plc.json()["state"], "offline");
    // a switch command as Home Assistant sends it reaches the write path
    data.client
        .publish("gw-ha/plc/pump_on/set", QoS::AtLeastOnce, false, "true")
        .await
        .expect("publish command");
    let result = data.wait_topic("gw-ha/plc/pump_on/set/result", SECS).await;
    assert!(result.json().get("ok").is_some(), "{}", result.text());
}

#[tokio::test]
async fn discovery_removes_gone_points_and_resends_on_birth() {
    let closed = free_port();
    let port = free_port();
    let cfg = ConfigDir::new("");
    let data = cfg.dir.path().join("data");
    std::fs::write(&cfg.path, fill(&config(closed, true), port, &data)).expect("write config");
    let mut gw = Gateway::spawn(cfg, port, &[]);
    let counter = "homeassistant/sensor/gw-ha_tank_counter/config";
    let level = "homeassistant/sensor/gw-ha_tank_level/config";
    {
        let mut sub = Sub::connect(gw.port, &["homeassistant/+/+/config"], QoS::AtLeastOnce).await;
        let got = configs(&mut sub, 8).await;
        assert!(got.contains_key(counter));
    }
    assert!(gw.terminate(SECS).success());

    // the counter point leaves the config
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    drop(gw);
    std::fs::write(&cfg.path, fill(&config(closed, false), port, &data)).expect("write config");
    let gw = Gateway::spawn(cfg, port, &[]);
    let mut sub = Sub::connect(gw.port, &["gw-ha/tank/level"], QoS::AtLeastOnce).await;
    // this run's discovery went into the publish channel once the new list
    // is written; a reading that comes after that went in after them
    let deadline = std::time::Instant::now() + SECS;
    let state = data.join("homeassistant.json");
    while !std::fs::read_to_string(&state).is_ok_and(|t| !t.contains(counter)) {
        assert!(
            std::time::Instant::now() < deadline,
            "state file keeps {counter}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sub.seen.clear();
    while sub.try_next(Duration::ZERO).await.is_some() {}
    sub.wait_topic("gw-ha/tank/level", SECS).await;
    // ...then a fresh subscriber sees every retained config, and a marker
    // published after its SUBACK comes after them: the counter's is gone
    let mut fresh = Sub::connect(gw.port, &["homeassistant/#"], QoS::AtLeastOnce).await;
    fresh
        .client
        .publish("homeassistant/marker", QoS::AtLeastOnce, false, "end")
        .await
        .expect("publish marker");
    let mut retained = BTreeSet::new();
    loop {
        let m = fresh.next(SECS).await;
        if m.topic == "homeassistant/marker" {
            break;
        }
        if !m.payload.is_empty() {
            retained.insert(m.topic);
        }
    }
    assert!(retained.contains(level), "{retained:?}");
    assert!(
        !retained.contains(counter),
        "removed config still retained: {retained:?}"
    );
    assert_eq!(retained.len(), 7, "{retained:?}");

    // Home Assistant's birth message brings every config again
    fresh
        .client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .expect("publish birth");
    let again = configs(&mut fresh, 7).await;
    assert!(again.contains_key(level), "{:?}", again.keys());
    assert!(!again.contains_key(counter), "{:?}", again.keys());
    assert!(
        gw.log_text().contains("discovery re-sent"),
        "{}",
        gw.log_text()
    );
}

/// With `rules.payload: per_device` each point's entity reads its value
/// from the device's message: the state topic is the device topic and the
/// value template picks the point out of `points`; the message there
/// holds that point's value.
#[tokio::test]
async fn per_device_payload_entities_read_their_point_from_the_device_message() {
    let yaml = "gateway:\n  id: gw-hag\n  data_dir: \"{data_dir}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\n\
        rules: { payload: per_device }\nhomeassistant: { enabled: true, prefix: homeassistant }\n\
        devices:\n  - name: tank\n    kind: simulated\n    poll: 100ms\n    points:\n      - { name: level, signal: constant, value: 42 }\n";
    let gw = Gateway::start(yaml);
    let mut sub = Sub::connect(
        gw.port,
        &["homeassistant/#", "gw-hag/tank"],
        QoS::AtLeastOnce,
    )
    .await;
    let config = sub
        .wait_topic("homeassistant/sensor/gw-hag_tank_level/config", SECS)
        .await
        .json();
    assert_eq!(config["state_topic"], "gw-hag/tank");
    assert_eq!(
        config["value_template"],
        "{{ value_json.points['level'].value }}"
    );
    let state = sub.wait_topic("gw-hag/tank", SECS).await.json();
    assert_eq!(state["points"]["level"]["value"], 42);
}
