//! Modbus TCP replies real devices get wrong, each against a server that
//! misbehaves that way: wrong transaction id, a reply byte by byte, a wrong
//! byte count, busy (06), gateway target failed (0B), a server that closes
//! after every reply (and `close_after_poll`); and bit writes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;
use tokio_modbus::ExceptionCode;

use crate::modbus::server::{Fault, Registers, TcpServer};
use crate::modbus::wire::{Framing, WireServer};
use crate::modbus::{SECS, header, reading, set, status_where};
use crate::support::{Gateway, Sub};

fn device(name: &str, addr: &str, extra: &str, points: &str) -> String {
    format!(
        "  - name: {name}\n    kind: modbus-tcp\n    address: \"{addr}\"\n    poll: 100ms\n    timeout: 300ms\n    backoff_max: 2s\n{extra}    points:\n{points}"
    )
}

#[tokio::test]
async fn wrong_transaction_id_is_no_answer_and_byte_by_byte_is_fine() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[42]));
    let srv = WireServer::start(regs.clone(), Framing::Mbap, "127.0.0.1:0").await;
    srv.faults().wrong_tid = 4;
    let yaml = format!(
        "{}{}",
        header("gw-tid"),
        device(
            "d",
            &srv.addr.to_string(),
            "    retries: 1\n",
            "      - { name: v, table: holding, address: 0 }\n"
        )
    );
    // room for a reply that dribbles in, even on a loaded machine
    let yaml = yaml.replace("    timeout: 300ms\n", "    timeout: 1s\n");
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-tid/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-tid/status/d", |s| s.get("error").is_some()).await;
    let err = st["error"].as_str().expect("error");
    assert!(
        err.starts_with("holding 0 (unit 1): bad reply: mismatching header"),
        "{err}"
    );
    assert!(
        sub.seen.iter().all(|m| m.topic != "gw-tid/d/v"),
        "a reply to another transaction is no value"
    );
    // the id comes right again: values, and a clean status
    assert_eq!(reading(&mut sub, "gw-tid/d/v").await["value"], 42);
    status_where(&mut sub, "gw-tid/status/d", |s| s.get("error").is_none()).await;

    // replies dribble in one byte every 20 ms (11 bytes, 220 ms < 1 s timeout)
    srv.faults().trickle = Some(Duration::from_millis(20));
    regs.unit(1, |b| b.set_holding(0, &[43]));
    sub.wait_for(SECS, |m| m.topic == "gw-tid/d/v" && m.json()["value"] == 43)
        .await;
    sub.seen.clear();
    for _ in 0..3 {
        assert_eq!(reading(&mut sub, "gw-tid/d/v").await["value"], 43);
    }
    assert!(
        sub.seen.iter().all(|m| m.topic != "gw-tid/status/d"),
        "a slow reply is a good reply: the status stays clean"
    );
}

#[tokio::test]
async fn a_wrong_byte_count_fails_that_read_only() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[1]);
        b.set_holding(100, &[2]);
    });
    let srv = WireServer::start(regs.clone(), Framing::Mbap, "127.0.0.1:0").await;
    srv.faults().wrong_byte_count_at = Some(0);
    let yaml = format!(
        "{}{}",
        header("gw-bc2"),
        device(
            "d",
            &srv.addr.to_string(),
            "    retries: 0\n",
            "      - { name: bad, table: holding, address: 0 }\n      - { name: good, table: holding, address: 100 }\n"
        )
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-bc2/#"], QoS::AtLeastOnce).await;
    let st = status_where(&mut sub, "gw-bc2/status/d", |s| s.get("error").is_some()).await;
    assert_eq!(st["state"], "online", "{st}");
    let err = st["error"].as_str().expect("error");
    assert!(err.starts_with("holding 0 (unit 1): bad reply"), "{err}");
    for _ in 0..3 {
        assert_eq!(reading(&mut sub, "gw-bc2/d/good").await["value"], 2);
    }
    assert!(sub.seen.iter().all(|m| m.topic != "gw-bc2/d/bad"));
}

#[tokio::test]
async fn busy_is_asked_again_and_gateway_target_failed_is_the_unit_offline() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[5]));
    regs.unit(2, |b| b.set_holding(0, &[6]));
    regs.lock().busy.insert(1, 3);
    regs.lock()
        .faults
        .insert((2, 0), Fault::Exception(ExceptionCode::GatewayTargetDevice));
    let srv = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let addr = srv.addr.to_string();
    let point = "      - { name: v, table: holding, address: 0 }\n";
    let yaml = format!(
        "{}{}{}",
        header("gw-ex"),
        device("busy", &addr, "    busy_delay: 50ms\n", point),
        device("behind", &addr, "    unit: 2\n", point),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-ex/#"], QoS::AtLeastOnce).await;
    // three busy answers, then the value: never an error, never offline
    assert_eq!(reading(&mut sub, "gw-ex/busy/v").await["value"], 5);
    let log: Vec<String> = regs
        .lock()
        .log
        .iter()
        .filter(|(u, _)| *u == 1)
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    assert!(log.len() >= 4, "{log:?}");
    assert!(
        sub.seen
            .iter()
            .filter(|m| m.topic == "gw-ex/status/busy")
            .all(|m| m.json()["state"] == "online" && m.json().get("error").is_none()),
        "busy is not an error: {:?}",
        sub.seen
            .iter()
            .filter(|m| m.topic == "gw-ex/status/busy")
            .map(|m| m.text())
            .collect::<Vec<_>>()
    );

    // 0B: the unit behind the gateway is offline; the gateway (and unit 1
    // through it) is fine
    let st = status_where(&mut sub, "gw-ex/status/behind", |s| s["state"] == "offline").await;
    assert_eq!(
        st["error"],
        "holding 0 (unit 2): exception GatewayTargetDevice (0x0B): the unit behind the gateway does not answer"
    );
    for _ in 0..5 {
        assert_eq!(reading(&mut sub, "gw-ex/busy/v").await["value"], 5);
    }
    let asked = regs.requests_of(2);
    assert!(
        asked <= 6,
        "an offline unit is probed with backoff, asked {asked} times"
    );
    regs.lock().faults.clear();
    status_where(&mut sub, "gw-ex/status/behind", |s| s["state"] == "online").await;
    assert_eq!(reading(&mut sub, "gw-ex/behind/v").await["value"], 6);
}

#[tokio::test]
async fn a_server_that_closes_after_every_reply_and_close_after_poll() {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[1]);
        b.set_holding(50, &[2]);
        b.set_input(0, &[3]);
    });
    let srv = WireServer::start(regs.clone(), Framing::Mbap, "127.0.0.1:0").await;
    srv.faults().close_after_reply = true;
    let own = Registers::default();
    own.unit(1, |b| *b = regs.lock().units[&1].clone());
    let polite = WireServer::start(own.clone(), Framing::Mbap, "127.0.0.1:0").await;
    let points = "      - { name: a, table: holding, address: 0 }\n      - { name: b, table: holding, address: 50 }\n      - { name: c, table: input, address: 0 }\n";
    let yaml = format!(
        "{}{}{}",
        header("gw-cl"),
        device("rude", &srv.addr.to_string(), "    retries: 0\n", points),
        device(
            "shared",
            &polite.addr.to_string(),
            "    poll: 200ms\n    close_after_poll: true\n",
            points
        )
        .replace("    poll: 100ms\n", ""),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-cl/#"], QoS::AtLeastOnce).await;
    // every request of the cycle finds the connection closed by the server,
    // opens a new one and is answered: no error, no offline
    for _ in 0..3 {
        for p in ["a", "b", "c"] {
            reading(&mut sub, &format!("gw-cl/rude/{p}")).await;
        }
    }
    let st = status_where(&mut sub, "gw-cl/status/rude", |_| true).await;
    assert!(st["state"] == "online" && st.get("error").is_none(), "{st}");
    assert!(
        sub.seen
            .iter()
            .filter(|m| m.topic == "gw-cl/status/rude")
            .all(|m| m.json()["state"] == "online"),
        "never offline"
    );

    // close_after_poll: one connection per poll, three requests on each
    sub.seen.clear();
    for _ in 0..5 {
        reading(&mut sub, "gw-cl/shared/c").await;
    }
    let conns = polite.connections.load(Ordering::SeqCst);
    let polls = own.requests() / 3;
    assert!(polls >= 5, "{polls} polls");
    assert!(
        conns.abs_diff(polls) <= 1,
        "{conns} connections for {polls} polls"
    );
}

#[tokio::test]
async fn bit_writes_with_mask_and_read_modify_write() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[0x00F0]));
    regs.unit(2, |b| b.set_holding(0, &[0x00F0]));
    let srv = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let addr = srv.addr.to_string();
    let points = "      - { name: b0, table: holding, address: 0, bit: 0, writable: true }\n      - { name: b4, table: holding, address: 0, bit: 4, writable: true }\n";
    let yaml = format!(
        "{}{}{}",
        header("gw-bit"),
        device("rmw", &addr, "    poll: 1s\n", points).replace("    poll: 100ms\n", ""),
        device(
            "mask",
            &addr,
            "    poll: 1s\n    unit: 2\n    bit_write: mask\n",
            points
        )
        .replace("    poll: 100ms\n", ""),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-bit/#"], QoS::AtLeastOnce).await;
    status_where(&mut sub, "gw-bit/status/rmw", |s| s["state"] == "online").await;
    status_where(&mut sub, "gw-bit/status/mask", |s| s["state"] == "online").await;
    for dev in ["rmw", "mask"] {
        assert_eq!(
            set(&mut sub, &format!("gw-bit/{dev}/b0"), "true").await,
            json!({"ok": true})
        );
        assert_eq!(
            set(&mut sub, &format!("gw-bit/{dev}/b4"), "false").await,
            json!({"ok": true})
        );
        sub.wait_for(SECS, |m| {
            m.topic == format!("gw-bit/{dev}/b4") && m.json()["value"] == false
        })
        .await;
    }
    assert_eq!(regs.holding(1, 0, 1), vec![0x00E1]);
    assert_eq!(regs.holding(2, 0, 1), vec![0x00E1]);
    let writes = |unit: u8| -> Vec<String> {
        regs.lock()
            .log
            .iter()
            .filter(|(u, r)| {
                *u == unit && !format!("{r:?}").starts_with("ReadHoldingRegisters(0, 1)")
            })
            .map(|(_, r)| format!("{r:?}"))
            .collect()
    };
    assert_eq!(
        writes(1),
        vec!["WriteSingleRegister(0, 241)", "WriteSingleRegister(0, 225)"],
        "read-modify-write: FC3 then FC6 of the whole register"
    );
    assert_eq!(
        writes(2),
        vec![
            "MaskWriteRegister(0, 65534, 1)",
            "MaskWriteRegister(0, 65519, 0)"
        ],
        "mask: FC22 only"
    );
    let r = set(&mut sub, "gw-bit/rmw/b0", "2").await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .expect("error")
            .contains("a bit takes true or false"),
        "{r}"
    );
}
