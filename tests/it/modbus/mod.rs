//! Modbus TCP against a real tokio-modbus server: exact values of every
//! type and order, merged reads and their split, bad replies and
//! exceptions, late replies, server restart, the example config; writes,
//! RTU, converters and config mistakes in the submodules. Shared here: the
//! config header and the waits the submodules use.

mod faults;
mod learn;
mod rtu;
mod rtu_tcp;
pub(crate) mod server;
pub(crate) mod wire;
mod writes;

use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};

use crate::modbus::server::{Fault, Registers, TcpServer};
use crate::support::{ConfigDir, Gateway, Sub, fieldgate};

pub(crate) const SECS: Duration = Duration::from_secs(10);

pub(crate) fn header(gw: &str) -> String {
    format!(
        "gateway:\n  id: {gw}\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\ndevices:\n"
    )
}

/// Waits for a reading on `topic` and returns its JSON.
pub(crate) async fn reading(sub: &mut Sub, topic: &str) -> Value {
    sub.wait_topic(topic, SECS).await.json()
}

/// Timestamps (ms) of the next `n` readings on `topic`.
pub(crate) async fn stamps(sub: &mut Sub, topic: &str, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(reading(sub, topic).await["ts"].as_i64().expect("ts"));
    }
    out
}

/// Waits until the device status on `topic` satisfies `pred`. Status and
/// readings travel different channels, so the latest status may already
/// sit among the messages an earlier wait skipped: it is looked at first.
pub(crate) async fn status_where(
    sub: &mut Sub,
    topic: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(i) = sub.seen.iter().rposition(|m| m.topic == topic) {
        let m = sub.seen.remove(i);
        if pred(&m.json()) {
            return m.json();
        }
    }
    sub.wait_for(SECS, |m| m.topic == topic && pred(&m.json()))
        .await
        .json()
}

const TYPES_POINTS: &str = r#"
      - { name: u16_p, table: holding, address: 0, type: u16 }
      - { name: i16_p, table: holding, address: 1, type: i16 }
      - { name: u32_abcd, table: holding, address: 2, type: u32 }
      - { name: u32_cdab, table: holding, address: 4, type: u32, word_order: little }
      - { name: i32_badc, table: holding, address: 6, type: i32, byte_order: little }
      - { name: f32_dcba, table: holding, address: 8, type: f32, word_order: little, byte_order: little }
      - { name: f32_abcd, table: holding, address: 10, type: f32 }
      - { name: u64_p, table: holding, address: 12, type: u64 }
      - { name: i64_p, table: holding, address: 16, type: i64 }
      - { name: f64_p, table: holding, address: 20, type: f64 }
      - { name: label, table: holding, address: 24, type: string, length: 4 }
      - { name: temp, table: input, address: 0, type: i16, scale: 0.1, offset: -40, unit: "°C" }
      - { name: status_word, table: input, address: 1 }
      - { name: alarm, table: input, address: 1, bit: 15 }
      - { name: ready, table: input, address: 1, bit: 1 }
      - { name: pump, table: coil, address: 5 }
      - { name: valve, table: coil, address: 6 }
      - { name: door, table: discrete, address: 3 }
"#;

fn types_registers() -> Registers {
    let regs = Registers::default();
    let f64_bits = 6.02214076e23f64.to_bits();
    regs.unit(1, |b| {
        b.set_holding(0, &[0xFFFE, 0xFFFE]);
        b.set_holding(2, &[0x1122, 0x3344]);
        b.set_holding(4, &[0x3344, 0x1122]);
        b.set_holding(6, &[0xA4F8, 0xEB32]); // -123456789 = F8A432EB as BADC
        b.set_holding(8, &[0x79E9, 0xF642]); // 123.456f32 = 42F6E979 as DCBA
        b.set_holding(10, &[0xBF00, 0x0000]); // -0.5
        b.set_holding(12, &[0x0000, 0x0100, 0x0000, 0x0005]);
        b.set_holding(16, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]);
        b.set_holding(
            20,
            &[
                (f64_bits >> 48) as u16,
                (f64_bits >> 32) as u16,
                (f64_bits >> 16) as u16,
                f64_bits as u16,
            ],
        );
        b.set_holding(24, &[0x5055, 0x4D50, 0x2D37, 0x0000]); // "PUMP-7"
        b.set_input(0, &[615, 0x8001]);
        b.coils.insert(5, true);
        b.coils.insert(6, false);
        b.discrete.insert(3, false);
    });
    regs
}

#[tokio::test]
async fn every_type_and_order_is_published_exactly_with_merged_reads() {
    let regs = types_registers();
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 200ms\n    timeout: 500ms\n    points:{TYPES_POINTS}",
        header("gw-mb"),
        server.addr
    );

    // the plan: 18 points in 4 requests
    let cfg = ConfigDir::new(&crate::support::fill(
        &yaml,
        1883,
        std::path::Path::new("/tmp"),
    ));
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(
        plan.contains("requests per poll: 4 (one per point: 18;"),
        "{plan}"
    );
    assert!(
        plan.contains("FC03 holding 0..=27 (28 registers)"),
        "{plan}"
    );

    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-mb/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-mb/status/plc", |_| true).await;
    assert_eq!(st["state"], "online", "{st}");
    assert!(st.get("error").is_none(), "{st}");

    let expect: [(&str, Value); 18] = [
        ("u16_p", json!(65534)),
        ("i16_p", json!(-2)),
        ("u32_abcd", json!(0x1122_3344)),
        ("u32_cdab", json!(0x1122_3344)),
        ("i32_badc", json!(-123_456_789)),
        ("f32_dcba", json!(123.456)),
        ("f32_abcd", json!(-0.5)),
        ("u64_p", json!(0x0100_0000_0005i64)),
        ("i64_p", json!(-2)),
        ("f64_p", json!(6.02214076e23)),
        ("label", json!("PUMP-7")),
        ("temp", json!(21.5)),
        ("status_word", json!(0x8001)),
        ("alarm", json!(true)),
        ("ready", json!(false)),
        ("pump", json!(true)),
        ("valve", json!(false)),
        ("door", json!(false)),
    ];
    for (point, value) in &expect {
        let r = reading(&mut sub, &format!("gw-mb/plc/{point}")).await;
        assert_eq!(&r["value"], value, "{point}: {r}");
        assert_eq!(r["quality"], "good");
    }
    let temp = reading(&mut sub, "gw-mb/plc/temp").await;
    assert_eq!(temp["unit"], "°C");

    // what the server saw: exactly the 4 merged requests, cycle after cycle
    let seen: std::collections::HashSet<String> = regs
        .lock()
        .log
        .iter()
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    let mut seen: Vec<String> = seen.into_iter().collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "ReadCoils(5, 2)",
            "ReadDiscreteInputs(3, 1)",
            "ReadHoldingRegisters(0, 28)",
            "ReadInputRegisters(0, 2)",
        ]
    );
}

#[tokio::test]
async fn refused_merged_read_is_split_and_exceptions_name_the_register() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[7]);
        b.set_holding(5, &[9]); // 1..=4 do not exist
    });
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: dev\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 200ms\n    timeout: 500ms\n    points:\n      - {{ name: a, table: holding, address: 0 }}\n      - {{ name: b, table: holding, address: 5 }}\n      - {{ name: missing, table: holding, address: 40 }}\n",
        header("gw-sp"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-sp/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-sp/status/dev", |s| s.get("error").is_some()).await;
    assert_eq!(reading(&mut sub, "gw-sp/dev/a").await["value"], 7);
    assert_eq!(reading(&mut sub, "gw-sp/dev/b").await["value"], 9);
    assert_eq!(st["state"], "online", "the device answers: {st}");
    assert_eq!(
        st["error"],
        "holding 40 (unit 1): exception IllegalDataAddress (0x02)"
    );
    // no value for the failed point, ever
    assert!(
        sub.seen.iter().all(|m| m.topic != "gw-sp/dev/missing"),
        "a failed read must publish nothing"
    );
    // the status is retained: a late subscriber gets it at once
    let mut late = Sub::connect(gw.port, &["gw-sp/status/dev"], QoS::AtLeastOnce).await;
    let m = late.next(SECS).await;
    assert!(m.retain, "device status must be retained");
    assert_eq!(m.json()["error"], st["error"]);
    let log: Vec<String> = regs
        .lock()
        .log
        .iter()
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    let merged = log
        .iter()
        .filter(|r| *r == "ReadHoldingRegisters(0, 6)")
        .count();
    assert_eq!(
        merged, 1,
        "the merged read is tried once, then split: {log:?}"
    );
    assert!(
        log.contains(&"ReadHoldingRegisters(5, 1)".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn bad_replies_fail_the_read_and_polling_goes_on() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[1, 2]);
        b.set_holding(100, &[3]);
        b.set_input(0, &[4]);
    });
    regs.lock().faults.insert((1, 0), Fault::ShortReply);
    regs.lock().faults.insert((1, 100), Fault::WrongFunction);
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: dev\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 200ms\n    timeout: 500ms\n    retries: 0\n    points:\n      - {{ name: pair, table: holding, address: 0, type: u32 }}\n      - {{ name: far, table: holding, address: 100 }}\n      - {{ name: good, table: input, address: 0 }}\n",
        header("gw-bad"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-bad/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-bad/status/dev", |s| s.get("error").is_some()).await;
    let err = st["error"].as_str().expect("error text");
    assert!(
        err.contains("holding 0..=1 (unit 1): bad reply: 1 registers in reply to a read of 2"),
        "{err}"
    );
    assert!(
        err.contains("holding 100 (unit 1): bad reply: function code 0x04 in reply to 0x03"),
        "{err}"
    );
    assert_eq!(st["state"], "online");
    // the healthy point keeps coming, the bad ones publish nothing
    for _ in 0..3 {
        assert_eq!(reading(&mut sub, "gw-bad/dev/good").await["value"], 4);
    }
    assert!(
        sub.seen
            .iter()
            .all(|m| m.topic != "gw-bad/dev/pair" && m.topic != "gw-bad/dev/far")
    );

    // the device heals: values arrive and the status clears
    regs.lock().faults.clear();
    assert_eq!(
        reading(&mut sub, "gw-bad/dev/pair").await["value"],
        0x0001_0002
    );
    assert_eq!(reading(&mut sub, "gw-bad/dev/far").await["value"], 3);
    status_where(&mut sub, "gw-bad/status/dev", |s| {
        s["state"] == "online" && s.get("error").is_none()
    })
    .await;
}

#[tokio::test]
async fn server_restart_goes_offline_then_reconnects() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[42]));
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let addr = server.addr;
    let healthy = Registers::default();
    healthy.unit(1, |b| b.set_input(0, &[5]));
    let other = TcpServer::start(healthy.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: dev\n    kind: modbus-tcp\n    address: \"{addr}\"\n    poll: 100ms\n    timeout: 300ms\n    backoff_max: 1s\n    points:\n      - {{ name: v, table: holding, address: 0 }}\n  - name: other\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 100ms\n    points:\n      - {{ name: c, table: input, address: 0 }}\n",
        header("gw-rs"),
        other.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-rs/#"], QoS::AtLeastOnce).await;
    assert_eq!(reading(&mut sub, "gw-rs/dev/v").await["value"], 42);

    server.stop().await;
    let st = status_where(&mut sub, "gw-rs/status/dev", |s| s["state"] == "offline").await;
    let err = st["error"].as_str().expect("error");
    assert!(err.starts_with("holding 0 (unit 1): "), "{err}");

    // while it is down, the other device keeps its pace
    let t0 = std::time::Instant::now();
    for _ in 0..10 {
        sub.wait_topic("gw-rs/other/c", SECS).await;
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    regs.unit(1, |b| b.set_holding(0, &[43]));
    let _server = TcpServer::start(regs.clone(), &addr.to_string()).await;
    status_where(&mut sub, "gw-rs/status/dev", |s| s["state"] == "online").await;
    sub.wait_for(SECS, |m| {
        m.topic == "gw-rs/dev/v" && m.json()["value"] == 43
    })
    .await;
}

/// Publishes `payload` on `{topic}/set` and returns the result JSON.
pub(crate) async fn set(sub: &mut Sub, topic: &str, payload: &str) -> Value {
    sub.client
        .publish(
            format!("{topic}/set"),
            QoS::AtLeastOnce,
            false,
            payload.to_string(),
        )
        .await
        .expect("publish set");
    reading(sub, &format!("{topic}/set/result")).await
}

#[tokio::test]
async fn late_replies_after_a_timeout_never_shift_values() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[1]));
    regs.lock().delay = Duration::from_millis(400);
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "{}  - name: slow\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 100ms\n    timeout: 250ms\n    backoff_max: 1s\n    points:\n      - {{ name: v, table: holding, address: 0 }}\n",
        header("gw-late"),
        server.addr
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-late/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-late/status/slow", |s| s["state"] == "offline").await;
    assert_eq!(st["error"], "holding 0 (unit 1): no reply within 250ms");
    assert!(sub.seen.iter().all(|m| m.topic != "gw-late/slow/v"));

    // the device speeds up and its value changes: every value published
    // from now on is the current one, never a late reply to an old request
    regs.unit(1, |b| b.set_holding(0, &[2]));
    regs.lock().delay = Duration::ZERO;
    status_where(&mut sub, "gw-late/status/slow", |s| s["state"] == "online").await;
    for _ in 0..5 {
        assert_eq!(reading(&mut sub, "gw-late/slow/v").await["value"], 2);
    }
}

#[test]
fn the_example_config_checks_and_shows_the_merged_requests() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/modbus.yaml");
    let out = fieldgate(&["check", "-c", path]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // boiler: 10 points in 5 requests; meter: 3 points (1-based addresses) in 1
    assert!(
        plan.contains("requests per poll: 5 (one per point: 10;"),
        "{plan}"
    );
    assert!(
        plan.contains("inverter (modbus-rtu-tcp 192.168.1.60:4196 RTU frames, unit 7,"),
        "{plan}"
    );
    assert!(plan.contains("broadcast (unit 0): never read"), "{plan}");
    assert!(
        plan.contains("FC04 input 100..=107 (8 registers): energy, power, voltage"),
        "{plan}"
    );
}
