//! `modbus-rtu-tcp` against a hand-made serial-to-Ethernet converter (RTU
//! frames over TCP, several units behind it): one connection and one bus,
//! a dead unit that backs off, a converter restart, a late reply that must
//! not be taken for another unit's, a reply byte by byte, a broadcast,
//! Modbus ASCII, and config mistakes of every Modbus kind.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;

use crate::modbus::server::Registers;
use crate::modbus::wire::{Framing, WireServer};
use crate::modbus::{SECS, header, reading, set, stamps, status_where};
use crate::support::{ConfigDir, Gateway, Sub, fieldgate};

fn device(name: &str, addr: &str, unit: u8, timeout: &str, points: &str) -> String {
    format!(
        "  - name: {name}\n    kind: modbus-rtu-tcp\n    address: \"{addr}\"\n    unit: {unit}\n    poll: 100ms\n    timeout: {timeout}\n    backoff_max: 2s\n    points:\n{points}"
    )
}

#[tokio::test]
async fn units_behind_one_converter_share_one_connection_and_a_dead_unit_backs_off() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[0x4387, 0xE9FC])); // 271.828f32
    regs.unit(2, |b| b.set_input(10, &[7]));
    regs.unit(3, |b| b.set_holding(0, &[1]));
    regs.lock().silent.insert(3);
    let conv = WireServer::start(regs.clone(), Framing::Rtu, "127.0.0.1:0").await;
    let addr = conv.addr.to_string();
    let yaml = format!(
        "{}{}{}{}",
        header("gw-rt"),
        device(
            "one",
            &addr,
            1,
            "200ms",
            "      - { name: pi, table: holding, address: 0, type: f32 }\n"
        ),
        device(
            "two",
            &addr,
            2,
            "200ms",
            "      - { name: v, table: input, address: 10 }\n"
        ),
        device(
            "three",
            &addr,
            3,
            "200ms",
            "      - { name: v, table: holding, address: 0 }\n"
        ),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-rt/#"], QoS::AtLeastOnce).await;
    assert_eq!(
        reading(&mut sub, "gw-rt/one/pi").await["value"],
        json!(271.828)
    );
    assert_eq!(reading(&mut sub, "gw-rt/two/v").await["value"], 7);
    let st = status_where(&mut sub, "gw-rt/status/three", |s| s["state"] == "offline").await;
    assert_eq!(st["error"], "holding 0 (unit 3): no reply within 200ms");

    // the live units keep their pace beside the dead one, which is probed
    // with backoff, all over the one connection
    let one = stamps(&mut sub, "gw-rt/one/pi", 31).await;
    let avg = (one[30] - one[0]) as f64 / 30.0;
    eprintln!("rtu-tcp poll interval beside a dead unit: {avg:.1} ms (poll 100 ms)");
    assert!(avg < 150.0, "unit 1 slowed to {avg:.1} ms per reading");
    let probes = regs.requests_of(3);
    assert!(probes <= 8, "the dead unit was asked {probes} times");
    assert_eq!(
        conv.connections.load(Ordering::SeqCst),
        1,
        "one connection for the bus"
    );
    assert_eq!(
        gw.log_text().matches("bus stream failed").count(),
        0,
        "a silent unit is no reason to reconnect"
    );

    // the converter restarts: the units go offline, then the bus reconnects
    drop(conv);
    status_where(&mut sub, "gw-rt/status/one", |s| s["state"] == "offline").await;
    regs.unit(1, |b| b.set_holding(0, &[0x4000, 0x0000])); // 2.0
    let conv = WireServer::start(regs.clone(), Framing::Rtu, &addr).await;
    status_where(&mut sub, "gw-rt/status/one", |s| s["state"] == "online").await;
    sub.wait_for(SECS, |m| {
        m.topic == "gw-rt/one/pi" && m.json()["value"] == 2.0
    })
    .await;
    assert_eq!(conv.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_late_reply_is_never_taken_for_the_next_units_answer() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[111]));
    regs.unit(2, |b| b.set_holding(0, &[222]));
    let conv = WireServer::start(regs.clone(), Framing::Rtu, "127.0.0.1:0").await;
    // the first two replies come after the gateway gave up on them
    conv.faults().late = Some((2, Duration::from_millis(300)));
    let addr = conv.addr.to_string();
    let yaml = format!(
        "{}{}{}",
        header("gw-late2"),
        device(
            "a",
            &addr,
            1,
            "200ms",
            "      - { name: v, table: holding, address: 0 }\n"
        ),
        device(
            "b",
            &addr,
            2,
            "200ms",
            "      - { name: v, table: holding, address: 0 }\n"
        ),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-late2/+/v"], QoS::AtLeastOnce).await;
    // same function, same length, other unit: only the unit id tells them
    // apart, and every value must land on its own device
    let mut seen = (0, 0);
    while seen.0 < 10 || seen.1 < 10 {
        let m = sub.next(SECS).await;
        let v = m.json()["value"].clone();
        match m.topic.as_str() {
            "gw-late2/a/v" => {
                assert_eq!(v, 111, "unit 1 got {v}");
                seen.0 += 1;
            }
            "gw-late2/b/v" => {
                assert_eq!(v, 222, "unit 2 got {v}");
                seen.1 += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn a_reply_byte_by_byte_and_a_broadcast_write() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[0, 0x1234]));
    regs.unit(2, |b| b.set_holding(0, &[0, 0x5678]));
    let conv = WireServer::start(regs.clone(), Framing::Rtu, "127.0.0.1:0").await;
    conv.faults().trickle = Some(Duration::from_millis(15)); // 9 bytes in ~135 ms
    let addr = conv.addr.to_string();
    let slow = "1s";
    let yaml = format!(
        "{}{}{}",
        header("gw-bc"),
        device(
            "meter",
            &addr,
            1,
            slow,
            "      - { name: v, table: holding, address: 1 }\n"
        ),
        device(
            "all",
            &addr,
            0,
            slow,
            "      - { name: mode, table: holding, address: 0, writable: true }\n"
        ),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-bc/#"], QoS::AtLeastOnce).await;
    let r = reading(&mut sub, "gw-bc/meter/v").await;
    assert_eq!(r["value"], 0x1234);
    let st = status_where(&mut sub, "gw-bc/status/meter", |_| true).await;
    assert_eq!(st["state"], "online");
    assert!(
        st.get("error").is_none(),
        "a slow reply is a good reply: {st}"
    );

    // unit 0: every unit applies it, nobody answers, the gateway does not
    // wait out the timeout for an answer that never comes
    let t0 = Instant::now();
    assert_eq!(
        set(&mut sub, "gw-bc/all/mode", "3").await,
        json!({"ok": true})
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(900), "broadcast took {took:?}");
    assert_eq!(regs.holding(1, 0, 1), vec![3]);
    assert_eq!(regs.holding(2, 0, 1), vec![3]);
    let to_zero: Vec<String> = regs
        .lock()
        .log
        .iter()
        .filter(|(u, _)| *u == 0)
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    assert_eq!(
        to_zero,
        vec!["WriteSingleRegister(0, 3)"],
        "unit 0 is never read"
    );
    // the bus goes on with the next unit's replies
    reading(&mut sub, "gw-bc/meter/v").await;
}

#[test]
fn modbus_config_mistakes_name_the_yaml_path_and_line() {
    let yaml = "gateway: { id: gw }\ndevices:\n  - name: a\n    kind: modbus-tcp\n    address: plc.local\n    points:\n      - { name: p, table: input, address: 0, type: f32, writable: true }\n      - { name: s, table: holding, address: 2, type: string }\n  - name: b\n    kind: modbus-rtu\n    port: /dev/ttyUSB9\n    unit: 1\n    points:\n      - { name: p, table: coil, address: 0, type: u16 }\n  - name: c\n    kind: modbus-rtu\n    port: /dev/ttyUSB9\n    baud: 19200\n    unit: 1\n";
    let cfg = ConfigDir::new(yaml);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "devices[0].address (line 5, column 5): \"plc.local\" is not host:port",
        "devices[0].points[0].writable (line 7, column 57): input is a read-only table",
        "devices[0].points[1].length (line 8, column 9): a string needs `length`",
        "devices[1].points[0].type (line 14, column 45): a coil holds single bits",
        "devices[2].port (line 17, column 5): /dev/ttyUSB9 is shared with b (devices[1]) but the line settings differ",
        "devices[2].unit (line 19, column 5): unit 1 is already used on /dev/ttyUSB9 by devices[1]",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn converter_config_mistakes_name_the_yaml_path() {
    let yaml = "gateway: { id: gw }\ndevices:\n  - name: a\n    kind: modbus-rtu-tcp\n    address: conv.local\n    framing: ascii\n    points:\n      - { name: p, table: holding, address: 0 }\n  - name: b\n    kind: modbus-rtu-tcp\n    address: 10.0.0.9:4196\n    unit: 0\n    points:\n      - { name: p, table: holding, address: 0 }\n      - { name: q, table: holding, address: 1, bit: 2, writable: true }\n  - name: c\n    kind: modbus-rtu-tcp\n    address: 10.0.0.9:4196\n    unit: 0\n    close_after_poll: true\n    points:\n      - { name: p, table: holding, address: 0, writable: true }\n";
    let cfg = ConfigDir::new(yaml);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "devices[0].address (line 5, column 5): \"conv.local\" is not host:port",
        "devices[1].points[0].writable (line 14, column 9): unit 0 is the broadcast address",
        "devices[1].points[1].bit (line 15, column 48): a broadcast cannot read the register first: use `bit_write: mask`",
        "devices[2].address (line 18, column 5): 10.0.0.9:4196 is shared with b (devices[1]) but the settings differ",
        "devices[2].unit (line 19, column 5): unit 0 is already used on 10.0.0.9:4196 by devices[1]",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test]
async fn modbus_ascii_over_a_converter_reads_and_writes() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[0x4387, 0xE9FC, 7])); // 271.828f32, then 7
    regs.unit(2, |b| {
        b.coils.insert(4, false);
    });
    let conv = WireServer::start(regs.clone(), Framing::Ascii, "127.0.0.1:0").await;
    let addr = conv.addr.to_string();
    let ascii = |d: String| d.replace("    points:\n", "    framing: ascii\n    points:\n");
    let yaml = format!(
        "{}{}{}",
        header("gw-asc"),
        ascii(device(
            "one",
            &addr,
            1,
            "500ms",
            "      - { name: pi, table: holding, address: 0, type: f32 }\n      - { name: n, table: holding, address: 2, writable: true }\n"
        )),
        ascii(device(
            "two",
            &addr,
            2,
            "500ms",
            "      - { name: relay, table: coil, address: 4, writable: true }\n      - { name: ghost, table: holding, address: 9 }\n"
        )),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-asc/#"], QoS::AtLeastOnce).await;
    assert_eq!(
        reading(&mut sub, "gw-asc/one/pi").await["value"],
        json!(271.828)
    );
    assert_eq!(reading(&mut sub, "gw-asc/one/n").await["value"], 7);
    assert_eq!(reading(&mut sub, "gw-asc/two/relay").await["value"], false);
    let st = status_where(&mut sub, "gw-asc/status/two", |s| s.get("error").is_some()).await;
    assert_eq!(
        st["error"],
        "holding 9 (unit 2): exception IllegalDataAddress (0x02)"
    );
    assert_eq!(
        set(&mut sub, "gw-asc/one/n", "513").await,
        json!({"ok": true})
    );
    assert_eq!(regs.holding(1, 2, 1), vec![513]);
    assert_eq!(
        set(&mut sub, "gw-asc/two/relay", "true").await,
        json!({"ok": true})
    );
    assert_eq!(regs.coil(2, 4), Some(true));
    sub.wait_for(SECS, |m| {
        m.topic == "gw-asc/two/relay" && m.json()["value"] == true
    })
    .await;
    assert_eq!(conv.connections.load(Ordering::SeqCst), 1);
}
