//! `rules.payload: per_device` against a real Modbus TCP server: one
//! message per device per poll on `{gateway}/{device}` with every point's
//! value, unit, quality and ts; a point whose read fails listed bad;
//! `fieldgate check` saying what the setting does (and `none`, Sparkplug
//! only: tests/it/sparkplug.rs); a wrong value exits 78.
//! (per_point, the default, is what every other Modbus test subscribes to.)

use std::collections::BTreeSet;

use rumqttc::QoS;
use serde_json::{Value, json};

use crate::modbus::server::{Registers, TcpServer};
use crate::modbus::{SECS, header, reading};
use crate::support::{ConfigDir, Gateway, Sub, fieldgate};

/// Two devices on one server: `plc` (unit 1) whose reads all succeed, and
/// `meter` (unit 2) whose `current` lies where the server has no register.
fn config(server: &str, payload: &str) -> String {
    format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{server}\"\n    unit: 1\n    poll: 200ms\n    timeout: 500ms\n    points:
      - {{ name: temp, table: holding, address: 0, type: f32, unit: \"°C\" }}
      - {{ name: count, table: holding, address: 2 }}
      - {{ name: pump, table: coil, address: 5 }}
      - {{ name: level, table: input, address: 0, type: i16, scale: 0.1, unit: m }}
  - name: meter\n    kind: modbus-tcp\n    address: \"{server}\"\n    unit: 2\n    poll: 200ms\n    timeout: 500ms\n    points:
      - {{ name: volts, table: holding, address: 0, unit: V }}
      - {{ name: current, table: holding, address: 40, unit: A }}
rules:\n  payload: {payload}\n",
        // exact payloads whatever this machine's clock state
        header("gw-pd").replace("  data_dir:", "  clock_check: off\n  data_dir:")
    )
}

fn registers() -> Registers {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[0x41AC, 0x0000, 7]); // 21.5f32, then 7
        b.set_input(0, &[123]);
        b.coils.insert(5, true);
    });
    regs.unit(2, |b| b.set_holding(0, &[230]));
    regs
}

fn point_names(m: &Value) -> BTreeSet<String> {
    m["points"]
        .as_object()
        .expect("points is an object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn per_device_is_one_message_per_poll_with_every_point() {
    let server = TcpServer::start(registers(), "127.0.0.1:0").await;
    let gw = Gateway::start(&config(&server.addr.to_string(), "per_device"));
    let mut sub = Sub::connect(gw.port, &["gw-pd/#"], QoS::AtLeastOnce).await;

    let mut stamps = Vec::new();
    for _ in 0..4 {
        let m = reading(&mut sub, "gw-pd/plc").await;
        assert_eq!(m["device"], "plc", "{m}");
        let ts = m["ts"].as_i64().expect("ts");
        let p = &m["points"];
        assert_eq!(
            point_names(&m),
            ["count", "level", "pump", "temp"].map(String::from).into(),
            "{m}"
        );
        assert_eq!(p["temp"]["value"], 21.5, "{m}");
        assert_eq!(p["temp"]["unit"], "°C", "{m}");
        assert_eq!(p["count"]["value"], 7, "{m}");
        assert!(p["count"].get("unit").is_none(), "no unit configured: {m}");
        assert_eq!(p["pump"]["value"], true, "{m}");
        assert!((p["level"]["value"].as_f64().expect("level") - 12.3).abs() < 1e-9);
        assert_eq!(p["level"]["unit"], "m", "{m}");
        for (name, point) in p.as_object().expect("points") {
            assert_eq!(point["quality"], "good", "{name}: {m}");
            let pts = point["ts"].as_i64().expect("point ts");
            // the message's ts is its newest reading's, within one poll
            assert!(pts <= ts && ts - pts < 200, "{name}: {m}");
        }
        stamps.push(ts);
    }
    // one message per poll: consecutive messages are a poll apart, never
    // two of the same poll
    for w in stamps.windows(2) {
        assert!(
            w[1] - w[0] >= 100,
            "two messages within one poll: {stamps:?}"
        );
    }

    // the meter's `current` fails every poll: listed bad, value null
    for _ in 0..2 {
        let m = reading(&mut sub, "gw-pd/meter").await;
        assert_eq!(
            point_names(&m),
            ["current", "volts"].map(String::from).into(),
            "{m}"
        );
        assert_eq!(m["points"]["volts"]["value"], 230, "{m}");
        assert_eq!(m["points"]["volts"]["quality"], "good", "{m}");
        assert_eq!(
            m["points"]["current"],
            json!({"value": null, "unit": "A", "ts": m["ts"], "quality": "bad"}),
            "{m}"
        );
    }
    // nothing per point
    let per_point: Vec<&str> = sub
        .seen
        .iter()
        .map(|m| m.topic.as_str())
        .filter(|t| !t.starts_with("gw-pd/status"))
        .filter(|t| *t != "gw-pd/plc" && *t != "gw-pd/meter")
        .collect();
    assert!(per_point.is_empty(), "{per_point:?}");
}

#[tokio::test]
async fn per_point_stays_one_message_per_reading() {
    let server = TcpServer::start(registers(), "127.0.0.1:0").await;
    let gw = Gateway::start(&config(&server.addr.to_string(), "per_point"));
    let mut sub = Sub::connect(gw.port, &["gw-pd/#"], QoS::AtLeastOnce).await;
    let m = sub.wait_topic("gw-pd/plc/temp", SECS).await;
    let text = m.text();
    let ts = m.json()["ts"].as_i64().expect("ts");
    assert_eq!(
        text,
        format!(r#"{{"value":21.5,"unit":"°C","ts":{ts},"quality":"good"}}"#)
    );
    assert_eq!(reading(&mut sub, "gw-pd/meter/volts").await["value"], 230);
    assert!(
        sub.seen.iter().all(|m| m.topic != "gw-pd/plc"
            && m.topic != "gw-pd/meter"
            && m.topic != "gw-pd/meter/current"),
        "per_point publishes no device message and nothing for a failed read"
    );
}

/// `fieldgate check` on a simulated device with this `rules:` body (and
/// `r.rhai` beside it): its exit code and everything it printed.
fn check_rules(rules: &str) -> (Option<i32>, String) {
    let yaml = crate::support::fill(
        &format!(
            "{}  - name: demo\n    kind: simulated\n    points:\n      - {{ name: a, signal: counter }}\nrules:\n{rules}",
            header("gw-ck")
        ),
        1883,
        std::path::Path::new("/tmp"),
    );
    let cfg = ConfigDir::new(&yaml);
    cfg.write("r.rhai", "fn on_reading(r) { emit(r); }\n");
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_says_what_per_device_and_none_do_and_a_wrong_value_exits_78() {
    let assert_prints = |rules: &str, lines: &[&str]| {
        let (code, plan) = check_rules(rules);
        assert_eq!(code, Some(0), "{plan}");
        for line in lines {
            assert!(plan.contains(line), "{line:?} not in:\n{plan}");
        }
    };
    assert_prints(
        "  payload: per_device\n",
        &[
            "payload per_device: one message per device per poll on \"{gateway}/{device}\"",
            "-> gw-ck/demo\n",
        ],
    );
    assert_prints(
        "  scripts: [r.rhai]\n  payload: per_device\n",
        &[
            "payload per_device: not applied",
            "warning: rules.payload: per_device has no effect while rules.scripts are set",
        ],
    );
    assert_prints(
        "  payload: none\n",
        &[
            "payload none: no message for readings",
            "-> no message (rules.payload: none)\n",
            "warning: rules.payload: none and no sparkplug (or not enabled): readings are published nowhere",
        ],
    );

    assert_prints(
        "  scripts: [r.rhai]\n  payload: none\n",
        &[
            "payload none: not applied",
            "warning: rules.payload: none has no effect while rules.scripts are set",
        ],
    );

    // discovery would announce topics nothing publishes
    let (code, text) = check_rules("  payload: none\nhomeassistant:\n  prefix: ha\n");
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("homeassistant.enabled (line 13"), "{text}");
    assert!(text.contains("rules.payload: none"), "{text}");

    let (code, text) = check_rules("  qos: 1\n  payload: grouped\n");
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("rules.payload"), "{text}");
    assert!(text.contains("line 13"), "{text}");
    assert!(text.contains("per_device"), "names the values: {text}");
}
