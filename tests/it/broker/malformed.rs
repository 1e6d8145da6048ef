//! Malformed, truncated and random MQTT input, and floods, thrown at the
//! plain listener; afterwards the gateway is alive, a client connected
//! before the storm is still served, and a new client publishes and receives.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::SECS;
use super::abuse::{HEAVY, connected, still_serving};
use super::raw;
use super::yaml;
use crate::support::{Gateway, Sub};

/// Byte sequences a broker must survive: each is written on a fresh connection.
fn malformed_cases() -> Vec<(&'static str, Vec<u8>)> {
    let with_connect = |id: &str, tail: &[u8]| {
        let mut v = connected(id);
        v.extend_from_slice(tail);
        v
    };
    let valid = connected("m-half");
    let mut cases = vec![
        ("connack to the broker", vec![0x20, 0x02, 0x00, 0x00]),
        ("reserved type 0", vec![0x00, 0x00]),
        ("reserved type 15", vec![0xF0, 0x00]),
        ("connect with bad flags", {
            let mut v = connected("m-flags");
            v[0] = 0x1F;
            v
        }),
        ("connect, wrong protocol name", {
            let mut v = connected("m-proto");
            v[4] = b'X';
            v
        }),
        ("connect, protocol level 99", {
            let mut v = connected("m-level");
            v[8] = 99;
            v
        }),
        (
            "connect, length longer than the packet",
            vec![0x10, 0x40, 0x00, 0x04, b'M', b'Q'],
        ),
        (
            "connect, length shorter than the fields",
            vec![0x10, 0x03, 0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 2, 0, 30],
        ),
        ("half a connect", valid[..valid.len() / 2].to_vec()),
        (
            "huge remaining length",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b'a'],
        ),
        (
            "five-byte remaining length",
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "publish before connect",
            raw::publish("m/x", b"x", 0, false, 0),
        ),
        (
            "connack after connect",
            with_connect("m-connack", &[0x20, 0x02, 0x00, 0x00]),
        ),
        (
            "suback after connect",
            with_connect("m-suback", &[0x90, 0x03, 0x00, 0x01, 0x00]),
        ),
        (
            "unsuback after connect",
            with_connect("m-unsuback", &[0xB0, 0x02, 0x00, 0x01]),
        ),
        (
            "pingresp after connect",
            with_connect("m-pingresp", &[0xD0, 0x00]),
        ),
        ("second connect", {
            let second = connected("m-second");
            with_connect("m-twice", &second)
        }),
        (
            "publish qos 3",
            with_connect("m-qos3", &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]),
        ),
        (
            "publish with a wildcard topic",
            with_connect("m-wild", &raw::publish("m/#", b"x", 0, false, 0)),
        ),
        (
            "publish with an empty topic",
            with_connect("m-empty", &raw::publish("", b"x", 0, false, 0)),
        ),
        (
            "publish topic longer than packet",
            with_connect("m-tlen", &[0x30, 0x03, 0x00, 0x09, b'a']),
        ),
        (
            "publish topic invalid utf-8",
            with_connect("m-utf8", &[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x']),
        ),
        (
            "qos 1 publish without packet id",
            with_connect("m-nopkid", &[0x32, 0x03, 0x00, 0x01, b'a']),
        ),
        (
            "qos 1 publish with packet id 0",
            with_connect("m-pkid0", &raw::publish("m/a", b"x", 1, false, 0)),
        ),
        (
            "subscribe with bad flags",
            with_connect(
                "m-subflags",
                &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            ),
        ),
        (
            "subscribe without filters",
            with_connect("m-subempty", &[0x82, 0x02, 0x00, 0x01]),
        ),
        (
            "subscribe qos 3",
            with_connect("m-subqos", &raw::subscribe(1, "m/a", 3)),
        ),
        (
            "subscribe to an invalid filter",
            with_connect("m-badfilter", &raw::subscribe(1, "m/#/a", 0)),
        ),
        (
            "subscribe to an empty filter",
            with_connect("m-nofilter", &raw::subscribe(1, "", 0)),
        ),
        (
            "unsubscribe without filters",
            with_connect("m-unsubempty", &[0xA2, 0x02, 0x00, 0x01]),
        ),
        (
            "puback for an unknown id",
            with_connect("m-puback", &[0x40, 0x02, 0x12, 0x34]),
        ),
        (
            "pubrec for an unknown id",
            with_connect("m-pubrec", &[0x50, 0x02, 0x12, 0x34]),
        ),
        (
            "pubrel for an unknown id",
            with_connect("m-pubrel", &[0x62, 0x02, 0x12, 0x34]),
        ),
        (
            "pubcomp for an unknown id",
            with_connect("m-pubcomp", &[0x70, 0x02, 0x12, 0x34]),
        ),
        (
            "disconnect with a body",
            with_connect("m-disc", &[0xE0, 0x01, 0x00]),
        ),
        (
            "pingreq flood",
            with_connect("m-pingflood", &raw::PINGREQ.repeat(20_000)),
        ),
        ("publish flood", {
            let one = raw::publish("m/flood", &[7u8; 100], 0, false, 0);
            with_connect("m-pubflood", &one.repeat(20_000))
        }),
        ("subscribe flood", {
            let mut tail = Vec::new();
            for i in 1..=2_000u16 {
                tail.extend(raw::subscribe(i, &format!("m/s/{i}"), 1));
            }
            with_connect("m-subflood", &tail)
        }),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    for i in 0..150 {
        let n = rng.random_range(1..2048);
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        cases.push(if i % 2 == 0 {
            ("random bytes", bytes)
        } else {
            ("connect, then random bytes", with_connect("m-rand", &bytes))
        });
    }
    for i in 0..150u32 {
        // valid packets with a few bytes flipped
        let mut v = connected("m-flip");
        v.extend(raw::subscribe(1, "m/flip/#", 1));
        v.extend(raw::publish("m/flip/a", b"payload", 1, true, 2));
        for _ in 0..3 {
            let at = rng.random_range(0..v.len());
            v[at] = rng.random();
        }
        let _ = i;
        cases.push(("valid packets with flipped bytes", v));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_random_packets_leave_the_gateway_serving() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml(""));
    let port = gw.port;
    let mut bystander = Sub::connect(port, &["ok/#"], QoS::AtLeastOnce).await;
    let mut tasks = JoinSet::new();
    for (name, bytes) in malformed_cases() {
        tasks.spawn(async move {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return (name, false);
            };
            let _ = s.write_all(&bytes).await;
            // the broker closes it, or it stays half-open: both are fine; give it a moment
            let closed = raw::closed_within(&mut s, Duration::from_millis(1500)).await;
            (name, closed)
        });
    }
    let mut open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (name, closed) = r.expect("case task");
        if !closed {
            open.push(name);
        }
    }
    still_serving(&mut gw, "after-malformed").await;
    // a client connected before the storm is still served
    assert_eq!(
        bystander
            .wait_topic("ok/after-malformed", SECS)
            .await
            .text(),
        "alive"
    );

    let log = gw.log_text();
    let panics = log.matches("broker connection task panicked").count();
    eprintln!(
        "malformed input: {panics} connection-task panic(s) logged; still open after 1.5s: {open:?}"
    );
    // malformed input must not panic any connection task
    assert_eq!(
        log.matches("panicked at").count(),
        0,
        "a panic escaped the gateway's panic log:\n{log}"
    );
}
