//! Modbus RTU over pty pairs: two units on one bus beside a silent third,
//! writes on the bus, and CRC errors from a hand-made device.

use rumqttc::QoS;
use serde_json::json;

use crate::modbus::server::{RawRtuDevice, Registers, RtuServer};
use crate::modbus::{header, reading, set, stamps, status_where};
use crate::support::{Gateway, Sub};

#[tokio::test]
async fn rtu_bus_two_units_keep_their_rate_beside_a_silent_one() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[0x4387, 0xE9FC]); // 271.828f32
        b.coils.insert(0, false);
    });
    regs.unit(2, |b| b.set_input(10, &[0x0002, 0x0001])); // u32 CDAB = 0x00010002
    regs.unit(3, |b| b.set_holding(0, &[1]));
    regs.lock().silent.insert(3);
    let server = RtuServer::start(regs.clone());
    let dev = |name: &str, unit: u8, points: &str| {
        format!(
            "  - name: {name}\n    kind: modbus-rtu\n    port: {}\n    baud: 19200\n    parity: even\n    unit: {unit}\n    poll: 100ms\n    timeout: 200ms\n    backoff_max: 5s\n    points:\n{points}",
            server.path
        )
    };
    let yaml = format!(
        "{}{}{}{}",
        header("gw-rtu"),
        dev(
            "one",
            1,
            "      - { name: pi, table: holding, address: 0, type: f32 }\n      - { name: relay, table: coil, address: 0, writable: true }\n"
        ),
        dev(
            "two",
            2,
            "      - { name: energy, table: input, address: 10, type: u32, word_order: little }\n"
        ),
        dev(
            "three",
            3,
            "      - { name: v, table: holding, address: 0, writable: true }\n"
        ),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-rtu/#"], QoS::AtLeastOnce).await;
    assert_eq!(
        reading(&mut sub, "gw-rtu/one/pi").await["value"],
        json!(271.828)
    );
    assert_eq!(
        reading(&mut sub, "gw-rtu/two/energy").await["value"],
        json!(0x0001_0002)
    );
    let st = status_where(&mut sub, "gw-rtu/status/three", |s| s["state"] == "offline").await;
    assert_eq!(
        st["error"], "holding 0 (unit 3): no reply within 200ms",
        "{st}"
    );

    // with unit 3 silent (200 ms per attempt) units 1 and 2 keep ~100 ms
    let one = stamps(&mut sub, "gw-rtu/one/pi", 41).await;
    let two = stamps(&mut sub, "gw-rtu/two/energy", 11).await;
    let avg = |v: &[i64]| (v[v.len() - 1] - v[0]) as f64 / (v.len() - 1) as f64;
    let (a1, a2) = (avg(&one), avg(&two));
    eprintln!("RTU poll interval with a silent unit: one {a1:.1} ms, two {a2:.1} ms (poll 100 ms)");
    assert!(a1 < 150.0, "unit 1 slowed to {a1:.1} ms per reading");
    assert!(a2 < 150.0, "unit 2 slowed to {a2:.1} ms per reading");
    // the silent unit is probed with backoff, not every cycle
    let probes = regs.requests_of(3);
    assert!(probes <= 10, "unit 3 was asked {probes} times");

    // a write on the bus
    assert_eq!(
        set(&mut sub, "gw-rtu/one/relay", "1").await,
        json!({"ok": true})
    );
    assert_eq!(regs.coil(1, 0), Some(true));
    // a write to the silent unit fails with a clear error, and costs one timeout
    let r = set(&mut sub, "gw-rtu/three/v", "5").await;
    assert_eq!(r["ok"], false);
    assert_eq!(
        r["error"],
        "writing v (unit 3, write holding 0) failed: no reply within 200ms"
    );
    drop(server);
}

#[tokio::test]
async fn crc_errors_on_rtu_fail_the_read_and_polling_goes_on() {
    let device = RawRtuDevice::start(1234);
    let yaml = format!(
        "{}  - name: meter\n    kind: modbus-rtu\n    port: {}\n    unit: 9\n    poll: 100ms\n    timeout: 200ms\n    retries: 0\n    points:\n      - {{ name: v, table: holding, address: 4 }}\n",
        header("gw-crc"),
        device.path
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-crc/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-crc/status/meter", |s| {
        s.get("error").is_some()
    })
    .await;
    assert_eq!(
        st["state"], "online",
        "garbled replies still mean the unit is there: {st}"
    );
    let err = st["error"].as_str().expect("error");
    assert!(
        err.starts_with("holding 4 (unit 9): garbled reply (7 bytes"),
        "{err}"
    );
    assert!(sub.seen.iter().all(|m| m.topic != "gw-crc/meter/v"));
    device
        .corrupt
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reading(&mut sub, "gw-crc/meter/v").await["value"], 1234);
    status_where(&mut sub, "gw-crc/status/meter", |s| {
        s["state"] == "online" && s.get("error").is_none()
    })
    .await;
}
