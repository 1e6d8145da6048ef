//! Modbus TCP writes against a real tokio-modbus server: every type and
//! order encoded, read back, refusals that never reach the device, device
//! exceptions, and FC15/FC16 for single items with `write_multiple`.

use rumqttc::QoS;
use serde_json::json;

use crate::modbus::server::{Registers, TcpServer};
use crate::modbus::{SECS, header, set, status_where};
use crate::support::{Gateway, Sub};

#[tokio::test]
async fn writes_encode_the_point_and_read_back() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[0; 16]);
        b.coils.insert(3, false);
        b.set_input(0, &[5]);
    });
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    // setpoint and flow take three writes within a second (two refused by
    // their type): `max_write_rate: 10/s` lifts the default 2/s
    let yaml = format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 1s\n    timeout: 500ms\n    points:\n      - {{ name: setpoint, table: holding, address: 0, type: i16, scale: 0.1, offset: -40, writable: true, max_write_rate: 10/s }}\n      - {{ name: flow, table: holding, address: 1, type: u32, word_order: little, writable: true, max_write_rate: 10/s }}\n      - {{ name: gain, table: holding, address: 3, type: f32, byte_order: little, writable: true }}\n      - {{ name: tag, table: holding, address: 5, type: string, length: 2, writable: true }}\n      - {{ name: pump, table: coil, address: 3, writable: true }}\n      - {{ name: fixed, table: holding, address: 7 }}\n      - {{ name: ghost, table: holding, address: 300, writable: true }}\n      - {{ name: sensor, table: input, address: 0 }}\n  - name: sim\n    kind: simulated\n    points:\n      - {{ name: x, signal: counter }}\n",
        header("gw-wr"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-wr/#"], QoS::AtLeastOnce).await;
    status_where(&mut sub, "gw-wr/status/plc", |s| s["state"] == "online").await;

    // i16 with scale and offset: 21.5 -> (21.5 + 40) / 0.1 = 615, FC6
    assert_eq!(
        set(&mut sub, "gw-wr/plc/setpoint", "21.5").await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 0, 1), vec![615]);
    let back = sub
        .wait_for(SECS, |m| {
            m.topic == "gw-wr/plc/setpoint" && m.json()["value"] == 21.5
        })
        .await;
    assert_eq!(back.json()["quality"], "good");
    assert!(
        regs.lock()
            .log
            .iter()
            .any(|(_, r)| format!("{r:?}") == "WriteSingleRegister(0, 615)")
    );

    // u32 CDAB through {"value": ...}, FC16
    assert_eq!(
        set(&mut sub, "gw-wr/plc/flow", r#"{"value": 305419896}"#).await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 1, 2), vec![0x5678, 0x1234]);

    // f32 BADC
    assert_eq!(
        set(&mut sub, "gw-wr/plc/gain", "1.5").await,
        json!({"ok": true})
    );
    let b = 1.5f32.to_bits();
    let (hi, lo) = ((b >> 16) as u16, b as u16);
    assert_eq!(
        regs.holding(1, 3, 2),
        vec![hi.swap_bytes(), lo.swap_bytes()]
    );

    // string
    assert_eq!(
        set(&mut sub, "gw-wr/plc/tag", r#""AB1""#).await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 5, 2), vec![0x4142, 0x3100]);
    sub.wait_for(SECS, |m| {
        m.topic == "gw-wr/plc/tag" && m.json()["value"] == "AB1"
    })
    .await;

    // coil, FC5
    assert_eq!(
        set(&mut sub, "gw-wr/plc/pump", "true").await,
        json!({"ok": true})
    );
    assert_eq!(regs.coil(1, 3), Some(true));
    sub.wait_for(SECS, |m| {
        m.topic == "gw-wr/plc/pump" && m.json()["value"] == true
    })
    .await;

    // refusals: nothing is written
    let before = regs.lock().units[&1].clone();
    let writes_before = writes(&regs);
    let cases: [(&str, &str, &str); 9] = [
        ("gw-wr/plc/setpoint", "10000", "out of range"),
        ("gw-wr/plc/setpoint", "true", "expected a number"),
        ("gw-wr/plc/flow", "-1", "out of range"),
        ("gw-wr/plc/flow", "1.5", "whole number"),
        ("gw-wr/plc/pump", "\"on\"", "a coil takes true or false"),
        ("gw-wr/plc/tag", "\"ABCDE\"", "at most 4"),
        ("gw-wr/plc/fixed", "1", "not writable"),
        ("gw-wr/plc/nope", "1", "has no point \"nope\""),
        ("gw-wr/sim/x", "1", "does not accept writes"),
    ];
    for (topic, payload, why) in cases {
        let r = set(&mut sub, topic, payload).await;
        assert_eq!(r["ok"], false, "{topic} {payload}: {r}");
        let e = r["error"].as_str().expect("error text");
        assert!(e.contains(why), "{topic} {payload}: {e}");
    }
    assert_eq!(
        writes(&regs),
        writes_before,
        "a refused write must not reach the device"
    );
    assert_eq!(regs.lock().units[&1].holding, before.holding);

    // the device refuses: the exception comes back
    let r = set(&mut sub, "gw-wr/plc/ghost", "1").await;
    assert_eq!(r["ok"], false);
    assert_eq!(
        r["error"],
        "writing ghost (unit 1, write holding 300) failed: exception IllegalDataAddress (0x02)"
    );
}

fn writes(regs: &Registers) -> usize {
    regs.lock()
        .log
        .iter()
        .filter(|(_, r)| format!("{r:?}").starts_with("Write"))
        .count()
}

#[tokio::test]
async fn write_multiple_uses_fc15_and_fc16_for_single_items() {
    let regs = Registers::default();
    regs.unit(7, |b| {
        b.set_holding(10, &[0]);
        b.coils.insert(2, false);
    });
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: old\n    kind: modbus-tcp\n    address: \"{}\"\n    unit: 7\n    poll: 1s\n    write_multiple: true\n    address_base: 1\n    points:\n      - {{ name: level, table: holding, address: 11, writable: true }}\n      - {{ name: fan, table: coil, address: 3, writable: true }}\n",
        header("gw-fc"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-fc/#"], QoS::AtLeastOnce).await;
    status_where(&mut sub, "gw-fc/status/old", |s| s["state"] == "online").await;
    assert_eq!(
        set(&mut sub, "gw-fc/old/level", "513").await,
        json!({"ok": true})
    );
    assert_eq!(
        set(&mut sub, "gw-fc/old/fan", "true").await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(7, 10, 1), vec![513]);
    assert_eq!(regs.coil(7, 2), Some(true));
    let log: Vec<String> = regs
        .lock()
        .log
        .iter()
        .map(|(u, r)| format!("{u} {r:?}"))
        .filter(|r| r.contains("Write"))
        .collect();
    assert_eq!(
        log,
        vec![
            "7 WriteMultipleRegisters(10, [513])",
            "7 WriteMultipleCoils(2, [true])"
        ]
    );
}
