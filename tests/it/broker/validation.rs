//! Protocol violations: each closes that connection only. The violating
//! packet is followed by a PINGREQ that must stay unanswered; a client that
//! had a session gets its will published (MQTT-3.1.2-8: "the Server closes
//! the Network Connection because of a protocol error"); nothing the
//! violating packets carry is delivered; a client connected before them all
//! is still served.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::raw::{self, ConnectOutcome, Will};
use super::{Client, SECS, opts, yaml};
use crate::support::{Gateway, Sub};

/// What happens before the violating bytes.
#[derive(Clone, Copy)]
pub(super) enum Before {
    /// A valid CONNECT with a will on `v/will/<case>`.
    Session,
    /// Nothing: the bytes are the first thing on the connection.
    Nothing,
}

pub(super) struct Case {
    pub rule: &'static str,
    pub what: &'static str,
    pub before: Before,
    pub bytes: Vec<u8>,
}

pub(super) const BAD_UTF8: &[u8] = b"v/\xC3\x28";
pub(super) const NUL: &[u8] = b"v/\x00";

fn cases() -> Vec<Case> {
    let s = |rule, what, bytes| Case {
        rule,
        what,
        before: Before::Session,
        bytes,
    };
    let pubr = raw::publish_raw;
    let subr = raw::subscribe_raw;
    let big = vec![b'x'; 2048];
    vec![
        s(
            "MQTT-1.5.3-1",
            "PUBLISH topic invalid UTF-8",
            pubr(0x30, BAD_UTF8, None, b"x"),
        ),
        s(
            "MQTT-1.5.3-2",
            "PUBLISH topic with U+0000",
            pubr(0x30, NUL, None, b"x"),
        ),
        s(
            "MQTT-3.3.2-2",
            "PUBLISH topic with +",
            pubr(0x30, b"v/+/bad", None, b"x"),
        ),
        s(
            "MQTT-3.3.2-2",
            "PUBLISH topic with #",
            pubr(0x30, b"v/bad/#", None, b"x"),
        ),
        s(
            "MQTT-4.7.3-1",
            "PUBLISH empty topic",
            pubr(0x30, b"", None, b"x"),
        ),
        s(
            "MQTT-3.3.1-4",
            "PUBLISH QoS 3",
            pubr(0x36, b"v/bad", Some(1), b"x"),
        ),
        s(
            "MQTT-2.3.1-1",
            "PUBLISH QoS 1 packet id 0",
            pubr(0x32, b"v/bad", Some(0), b"x"),
        ),
        s(
            "MQTT-2.3.1-1",
            "PUBLISH QoS 2 packet id 0",
            pubr(0x34, b"v/bad", Some(0), b"x"),
        ),
        s(
            "max_payload",
            "PUBLISH over max_payload (1KiB)",
            pubr(0x30, b"v/bad", None, &big),
        ),
        s(
            "MQTT-3.8.1-1",
            "SUBSCRIBE flags 0b0000",
            subr(0x80, 1, &[(b"v/ok", 0)]),
        ),
        s(
            "MQTT-3.8.1-1",
            "SUBSCRIBE flags 0b0011",
            subr(0x83, 1, &[(b"v/ok", 0)]),
        ),
        s(
            "MQTT-2.3.1-1",
            "SUBSCRIBE packet id 0",
            subr(0x82, 0, &[(b"v/ok", 0)]),
        ),
        s(
            "MQTT-3.8.3-3",
            "SUBSCRIBE without filters",
            subr(0x82, 1, &[]),
        ),
        s(
            "MQTT-3.8.3-4",
            "SUBSCRIBE QoS 3",
            subr(0x82, 1, &[(b"v/ok", 3)]),
        ),
        s(
            "MQTT-3.8.3-4",
            "SUBSCRIBE reserved option bits",
            subr(0x82, 1, &[(b"v/ok", 0x04)]),
        ),
        s(
            "MQTT-3.8.3-4",
            "SUBSCRIBE reserved bit 7",
            subr(0x82, 1, &[(b"v/ok", 0x81)]),
        ),
        s(
            "MQTT-4.7.1-2",
            "SUBSCRIBE filter a/#/b",
            subr(0x82, 1, &[(b"v/#/b", 0)]),
        ),
        s(
            "MQTT-4.7.1-2",
            "SUBSCRIBE filter a#",
            subr(0x82, 1, &[(b"v#", 0)]),
        ),
        s(
            "MQTT-4.7.1-3",
            "SUBSCRIBE filter a+",
            subr(0x82, 1, &[(b"v+", 0)]),
        ),
        s(
            "MQTT-4.7.1-3",
            "SUBSCRIBE filter +a/b",
            subr(0x82, 1, &[(b"+v/b", 0)]),
        ),
        s(
            "MQTT-4.7.3-1",
            "SUBSCRIBE empty filter",
            subr(0x82, 1, &[(b"", 0)]),
        ),
        s(
            "MQTT-1.5.3-1",
            "SUBSCRIBE filter invalid UTF-8",
            subr(0x82, 1, &[(BAD_UTF8, 0)]),
        ),
        s(
            "MQTT-1.5.3-2",
            "SUBSCRIBE filter with U+0000",
            subr(0x82, 1, &[(NUL, 0)]),
        ),
        s(
            "MQTT-3.10.1-1",
            "UNSUBSCRIBE flags 0b0000",
            raw::unsubscribe_raw(0xA0, 1, &[b"v/ok"]),
        ),
        s(
            "MQTT-2.3.1-1",
            "UNSUBSCRIBE packet id 0",
            raw::unsubscribe_raw(0xA2, 0, &[b"v/ok"]),
        ),
        s(
            "MQTT-3.10.3-2",
            "UNSUBSCRIBE without filters",
            raw::unsubscribe_raw(0xA2, 1, &[]),
        ),
        s(
            "MQTT-4.7.1-2",
            "UNSUBSCRIBE filter a/#/b",
            raw::unsubscribe_raw(0xA2, 1, &[b"v/#/b"]),
        ),
        s(
            "MQTT-3.6.1-1",
            "PUBREL flags 0b0000",
            vec![0x60, 0x02, 0x00, 0x01],
        ),
        s(
            "MQTT-2.2.2-2",
            "PUBACK with flags",
            vec![0x42, 0x02, 0x00, 0x01],
        ),
        s("MQTT-2.2.2-2", "PINGREQ with flags", vec![0xC1, 0x00]),
        s("MQTT-2.2.2-2", "DISCONNECT with flags", vec![0xE2, 0x00]),
        s(
            "MQTT-3.1.0-2",
            "a second CONNECT",
            raw::connect("v-second", true, 30, None, None),
        ),
    ]
}

/// Runs one case; `Err` says how the broker failed it.
async fn run(port: u16, i: usize, case: &Case) -> Result<(), String> {
    let mut s = match case.before {
        Before::Session => {
            let will = Will {
                topic: &format!("v/will/{i}"),
                payload: b"w",
                qos: 1,
                retain: false,
            };
            let c = raw::connect(&format!("v-{i}"), true, 30, None, Some(will));
            let (s, outcome) = raw::connect_raw(port, &c).await;
            if !matches!(outcome, ConnectOutcome::ConnAck { code: 0, .. }) {
                return Err(format!(
                    "the valid CONNECT before it was refused: {outcome:?}"
                ));
            }
            s
        }
        Before::Nothing => TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("tcp connect: {e}"))?,
    };
    let mut bytes = case.bytes.clone();
    bytes.extend_from_slice(&raw::PINGREQ);
    // the broker may close before it read everything: a failed write is fine
    let _ = s.write_all(&bytes).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), raw::read_packet(&mut s)).await {
            Err(_) => return Err("still open 5s after the violation".into()),
            Ok(None) => return Ok(()),
            Ok(Some((0x20, body))) if matches!(case.before, Before::Nothing) => {
                if body.get(1) == Some(&0) {
                    return Err("CONNECT accepted (CONNACK 0)".into());
                }
            }
            Ok(Some((first, body))) => {
                return Err(format!(
                    "answered with {first:#04x} {body:?} before closing"
                ));
            }
        }
    }
}

/// Runs every case at once; one line per mishandled case.
pub(super) async fn run_all(port: u16, all: &[Case]) -> Vec<String> {
    let mut tasks = JoinSet::new();
    for (i, case) in all.iter().enumerate() {
        let case = Case {
            bytes: case.bytes.clone(),
            ..*case
        };
        tasks.spawn(async move { (i, run(port, i, &case).await) });
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (i, result) = r.expect("case task");
        if let Err(e) = result {
            failures.push(format!("{} {}: {e}", all[i].rule, all[i].what));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_protocol_violation_closes_only_that_connection() {
    let gw = Gateway::start(&yaml("max_payload: 1KiB"));
    let port = gw.port;
    let mut bystander = Sub::connect(port, &["v/#"], QoS::AtLeastOnce).await;
    let all = cases();
    let mut failures = run_all(port, &all).await;
    // every session closed for a violation publishes its will
    let mut wills: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.before, Before::Session))
        .map(|(i, _)| format!("v/will/{i}"))
        .collect();
    let deadline = tokio::time::Instant::now() + SECS;
    let mut delivered_bad = Vec::new();
    while !wills.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = bystander.try_next(left).await else {
            break;
        };
        wills.retain(|w| *w != m.topic);
        if !m.topic.starts_with("v/will/") {
            delivered_bad.push(m.topic);
        }
    }
    for w in &wills {
        let i: usize = w["v/will/".len()..].parse().expect("case index");
        failures.push(format!(
            "{} {}: no will published after the protocol-error close (MQTT-3.1.2-8)",
            all[i].rule, all[i].what
        ));
    }
    // the bystander is still served, and nothing a violating packet carried got through
    let mut publisher = Client::connect(opts("v-pub", port)).await;
    publisher
        .publish_acked("v/alive", QoS::AtLeastOnce, false, "alive")
        .await;
    let m = bystander.wait_for(SECS, |m| m.topic == "v/alive").await;
    assert_eq!(m.text(), "alive");
    delivered_bad.extend(
        bystander
            .seen
            .drain(..)
            .map(|m| m.topic)
            .filter(|t| !t.starts_with("v/will/")),
    );
    if !delivered_bad.is_empty() {
        failures.push(format!(
            "violating publishes were delivered: {delivered_bad:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} violations mishandled:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
