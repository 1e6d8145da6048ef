//! Who may write to the plant, and how much: a writable point's `min` /
//! `max` and `max_write_rate` against a real tokio-modbus server (what
//! reaches the registers, what `.../set/result` says, the refusal count in
//! `/metrics`, the range Home Assistant is offered); the config errors of
//! those keys.

use rumqttc::QoS;
use serde_json::{Value, json};

use crate::config_errors::check;
use crate::modbus::server::{Registers, TcpServer};
use crate::modbus::{SECS, header, set, status_where};
use crate::support::{Gateway, Sub, free_port};

/// The write requests the server saw at `address` of unit 1.
fn writes_at(regs: &Registers, address: u16) -> usize {
    regs.lock()
        .log
        .iter()
        .filter(|(_, r)| {
            let r = format!("{r:?}");
            r.starts_with("Write") && r.contains(&format!("({address},"))
        })
        .count()
}

#[tokio::test]
async fn min_max_refuse_out_of_range_writes_and_reach_the_register_otherwise() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[20, 0]));
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 1s\n    points:\n      - {{ name: setpoint, table: holding, address: 0, type: i16, unit: \"°C\", writable: true, min: 0, max: 90, max_write_rate: 10/s }}\n      - {{ name: trim, table: holding, address: 1, type: i16, scale: 0.5, writable: true, min: -2.5 }}\nhomeassistant: {{ enabled: true }}\n",
        header("gw-ws"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-ws/#", "homeassistant/#"], QoS::AtLeastOnce).await;
    status_where(&mut sub, "gw-ws/status/plc", |s| s["state"] == "online").await;

    // in range: written and read back
    assert_eq!(
        set(&mut sub, "gw-ws/plc/setpoint", "45").await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 0, 1), vec![45]);
    assert_eq!(
        set(&mut sub, "gw-ws/plc/setpoint", "90").await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 0, 1), vec![90]);
    let written = writes_at(&regs, 0);
    assert_eq!(written, 2);

    // outside: refused, naming the range; the register keeps its value
    for (payload, shown) in [("95", "95"), ("-1", "-1"), (r#"{"value": 90.5}"#, "90.5")] {
        let r = set(&mut sub, "gw-ws/plc/setpoint", payload).await;
        assert_eq!(
            r,
            json!({"ok": false, "error": format!(
                "point setpoint: {shown} is outside the allowed range 0 to 90 (min/max in the config); nothing was written"
            )}),
            "{payload}"
        );
    }
    let r = set(&mut sub, "gw-ws/plc/trim", "-3").await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("-3 is outside the allowed range at least -2.5")),
        "{r}"
    );
    assert_eq!(regs.holding(1, 0, 2), vec![90, 0]);
    assert_eq!(
        writes_at(&regs, 0),
        written,
        "a refused write reached the device"
    );
    assert_eq!(writes_at(&regs, 1), 0);
    // a type error is still the device's own check, after the range
    let r = set(&mut sub, "gw-ws/plc/setpoint", "true").await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("expected a number")),
        "{r}"
    );

    // Home Assistant is offered the declared range, not the type's
    let ha = sub
        .wait_topic("homeassistant/number/gw-ws_plc_setpoint/config", SECS)
        .await
        .json();
    assert_eq!(
        (ha["min"].clone(), ha["max"].clone()),
        (json!(0.0), json!(90.0))
    );
    let ha = sub
        .wait_topic("homeassistant/number/gw-ws_plc_trim/config", SECS)
        .await
        .json();
    assert_eq!(
        (ha["min"].clone(), ha["max"].clone()),
        (json!(-2.5), json!(1e9))
    );
}

/// Publishes the values `1..=n` on `{point}/set` back to back and returns
/// the `n` results (in the order they came).
async fn burst(sub: &mut Sub, point: &str, n: u32) -> Vec<Value> {
    for v in 1..=n {
        sub.client
            .publish(
                format!("{point}/set"),
                QoS::AtLeastOnce,
                false,
                v.to_string(),
            )
            .await
            .expect("publish");
    }
    let mut out = Vec::new();
    while out.len() < n as usize {
        out.push(
            sub.wait_topic(&format!("{point}/set/result"), SECS)
                .await
                .json(),
        );
    }
    out
}

#[tokio::test]
async fn a_burst_past_max_write_rate_is_refused_and_counted() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[0, 0]));
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let mport = free_port();
    let yaml = format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 1s\n    points:\n      - {{ name: level, table: holding, address: 0, writable: true, max_write_rate: 3/min }}\n      - {{ name: valve, table: holding, address: 1, writable: true }}\nmetrics: {{ listen: \"127.0.0.1:{mport}\" }}\n",
        header("gw-rate"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-rate/#"], QoS::AtLeastOnce).await;
    status_where(&mut sub, "gw-rate/status/plc", |s| s["state"] == "online").await;

    // six writes at once: three in the minute are allowed, in order
    let got = burst(&mut sub, "gw-rate/plc/level", 6).await;
    let ok = got.iter().filter(|r| r["ok"] == true).count();
    assert_eq!(ok, 3, "{got:?}");
    for r in got.iter().filter(|r| r["ok"] == false) {
        let e = r["error"].as_str().expect("error text");
        assert!(
            e.starts_with(
                "point level: written too often (max_write_rate 3/min); nothing was written"
            ),
            "{e}"
        );
    }
    assert_eq!(writes_at(&regs, 0), 3, "refused writes reached the device");
    assert_eq!(
        regs.holding(1, 0, 1),
        vec![3],
        "the first three were written"
    );

    // the default rate, 2/s, guards a point without max_write_rate
    let got = burst(&mut sub, "gw-rate/plc/valve", 4).await;
    let refused: Vec<&Value> = got.iter().filter(|r| r["ok"] == false).collect();
    assert_eq!(refused.len(), 2, "{got:?}");
    assert!(
        refused.iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("(max_write_rate 2/s)"))),
        "{got:?}"
    );

    let (_, text) = crate::ops::http_get(mport, "/metrics");
    assert!(
        text.contains(
            "fieldgate_writes_refused_total{device=\"plc\",point=\"level\",reason=\"rate\"} 3"
        ),
        "{text}"
    );
    let valve = format!(
        "fieldgate_writes_refused_total{{device=\"plc\",point=\"valve\",reason=\"rate\"}} {}",
        refused.len()
    );
    assert!(text.contains(&valve), "{valve} not in:\n{text}");
}

#[test]
fn bad_write_limits_exit_78_with_path_and_line() {
    let dev = "gateway:\n  id: gw\ndevices:\n  - name: plc\n    kind: modbus-tcp\n    address: \"127.0.0.1:502\"\n    points:\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "      - { name: sp, table: holding, address: 0, writable: true, min: 90, max: 0 }\n",
            &[
                "devices[0].points[0].min (line 8",
                "min 90 is greater than max 0",
            ],
        ),
        (
            "      - { name: sp, table: holding, address: 0, writable: true, max_write_rate: fast }\n",
            &[
                "devices[0].points[0].max_write_rate (line 8",
                "invalid rate \"fast\"",
                "1/s, 10/min",
            ],
        ),
        (
            "      - { name: sp, table: holding, address: 0, writable: true, max_write_rate: 0/s }\n",
            &[
                "devices[0].points[0].max_write_rate (line 8",
                "between 1 and 1000",
            ],
        ),
        (
            "      - { name: a, table: holding, address: 0 }\n      - { name: sp, table: holding, address: 1, max: 5 }\n",
            &["devices[0].points[1].max (line 9", "writable points only"],
        ),
        (
            "      - { name: sp, table: holding, address: 0, max_write_rate: 1/s }\n",
            &[
                "devices[0].points[0].max_write_rate (line 8",
                "writable points only",
            ],
        ),
        (
            "      - { name: sp, table: holding, address: 0, writable: true, max: 70000 }\n",
            &[
                "devices[0].points[0].max (line 8",
                "max 70000 is beyond what this u16 point can hold (0 to 65535)",
            ],
        ),
        (
            "      - { name: sp, table: holding, address: 0, type: i16, scale: 0.1, writable: true, min: -4000 }\n",
            &["devices[0].points[0].min (line 8", "(-3276.8 to 3276.7)"],
        ),
        (
            "      - { name: on, table: coil, address: 0, writable: true, min: 0 }\n",
            &[
                "devices[0].points[0].min (line 8",
                "numeric points only, not bool",
            ],
        ),
        (
            "      - { name: tag, table: holding, address: 0, type: string, length: 2, writable: true, max: 3 }\n",
            &[
                "devices[0].points[0].max (line 8",
                "numeric points only, not string",
            ],
        ),
    ];
    for (points, wants) in cases {
        let yaml = format!("{dev}{points}");
        let (code, text) = check(&yaml);
        assert_eq!(code, 78, "config:\n{yaml}\noutput:\n{text}");
        for w in *wants {
            assert!(
                text.contains(w),
                "expected {w:?} for:\n{yaml}\ngot:\n{text}"
            );
        }
    }
    let (code, text) = check(&format!(
        "{dev}      - {{ name: sp, table: holding, address: 0, writable: true, min: 0, max: 90, max_write_rate: 10/min }}\n"
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("writable 0 to 90, at most 10/min"), "{text}");
}
