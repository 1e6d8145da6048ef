//! CONNECT and CONNACK: protocol name and level, client identifiers,
//! MQTT 3.1 clients, keep-alive. Refused CONNECTs are answered with their
//! CONNACK code, then closed.

use std::time::Duration;

use super::raw::{self, ConnectOutcome, Raw, Will};
use super::validation::{BAD_UTF8, Before, Case, NUL, run_all};
use super::{SECS, local_args, mosquitto, mosquitto_spawn, mosquitto_wait, yaml};
use crate::support::{Gateway, Sub};

/// Sends `connect` and asserts CONNACK `code` with session present 0
/// (MQTT-3.2.2-4), then that the broker closes the connection (MQTT-3.2.2-5).
pub(super) async fn refused_with(port: u16, connect: &[u8], code: u8, what: &str) {
    let (mut s, outcome) = raw::connect_raw(port, connect).await;
    assert_eq!(outcome, ConnectOutcome::connack(code), "{what}");
    assert!(
        raw::closed_within(&mut s, SECS).await,
        "{what}: still open after a refusing CONNACK (MQTT-3.2.2-5)"
    );
}

/// MQTT-3.1.2-1: a protocol name other than "MQTT" (or MQTT 3.1's
/// "MQIsdp") may get no CONNACK: the broker just closes.
#[tokio::test]
async fn wrong_protocol_name_closes_without_connack_mqtt_3_1_2_1() {
    let gw = Gateway::start(&yaml(""));
    for name in [&b"MQTX"[..], b"mqtt", b"", b"MQTTMQTT"] {
        let c = raw::connect_as(name, 4, "k-name");
        let (_s, outcome) = raw::connect_raw(gw.port, &c).await;
        assert_eq!(
            outcome,
            ConnectOutcome::ClosedWithoutConnAck,
            "protocol name {:?}",
            String::from_utf8_lossy(name)
        );
    }
}

/// MQTT-3.1.2-2: an unsupported protocol level gets CONNACK 1, then close;
/// the level must match the name (MQTT/4 and MQTT/5, MQIsdp/3; MQTT 5 is
/// in `mqtt5`).
#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1_mqtt_3_1_2_2() {
    let gw = Gateway::start(&yaml(""));
    for (name, level) in [
        (&b"MQTT"[..], 6u8),
        (b"MQTT", 99),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
    ] {
        let c = raw::connect_as(name, level, "k-level");
        let what = format!("{}/{level}", String::from_utf8_lossy(name));
        refused_with(gw.port, &c, 1, &what).await;
    }
}

/// MQTT-3.1.3-8: a zero-length client id with clean_session=0 gets CONNACK 2.
#[tokio::test]
async fn empty_client_id_with_clean_session_0_gets_connack_2_mqtt_3_1_3_8() {
    let gw = Gateway::start(&yaml(""));
    let c = raw::connect("", false, 30, None, None);
    refused_with(gw.port, &c, 2, "empty client id, clean_session=0").await;
}

/// MQTT-3.1.3-6: a zero-length client id with clean_session=1 is accepted
/// and the server assigns a unique one: two such clients work side by side.
#[tokio::test]
async fn empty_client_id_with_clean_session_1_is_accepted_mqtt_3_1_3_6() {
    let gw = Gateway::start(&yaml(""));
    let mut a = Raw::connect(gw.port, "").await;
    let mut b = Raw::connect(gw.port, "").await;
    assert_eq!(a.subscribe(1, "k/anon", 1).await, 1);
    assert_eq!(b.subscribe(1, "k/anon", 1).await, 1);
    // neither took the other over: both still receive
    a.send(&raw::publish("k/anon", b"both", 0, false, 0)).await;
    for c in [&mut a, &mut b] {
        let p = c.publish_in(SECS).await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("k/anon", &b"both"[..]));
    }
}

/// MQTT 3.1 (protocol "MQIsdp", level 3) limits client ids to 23 bytes:
/// a longer one gets CONNACK 2 (identifier rejected); 23 bytes are fine.
#[tokio::test]
async fn mqtt_3_1_client_id_over_23_bytes_gets_connack_2() {
    let gw = Gateway::start(&yaml(""));
    let long = "x".repeat(24);
    let c = raw::connect_as(b"MQIsdp", 3, &long);
    refused_with(gw.port, &c, 2, "MQTT 3.1, 24-byte client id").await;
    let ok = "y".repeat(23);
    let c = raw::connect_as(b"MQIsdp", 3, &ok);
    let (mut client, _) = Raw::open(gw.port, &c).await;
    assert_eq!(client.subscribe(1, "k/v31", 1).await, 1, "SUBACK over 3.1");
}

/// MQTT 3.1 clients (mosquitto_pub/mosquitto_sub -V mqttv31) publish and
/// subscribe; MQTT 3.1.1 clients on the same broker see their messages.
#[tokio::test]
async fn mqtt_3_1_clients_work_with_mosquitto_tools() {
    let gw = Gateway::start(&yaml(""));
    let port = gw.port.to_string();
    let mut modern = Sub::connect(gw.port, &["k/v31/#"], rumqttc::QoS::AtLeastOnce).await;
    let sub = mosquitto_spawn(
        "mosquitto_sub",
        &local_args(
            &port,
            &[
                "-V", "mqttv31", "-q", "1", "-t", "k/v31/r", "-C", "1", "-W", "10",
            ],
        ),
    );
    // retained: mosquitto_sub gets it whether it subscribed before or after
    let (ok, _, err) = mosquitto(
        "mosquitto_pub",
        &local_args(
            &port,
            &[
                "-V", "mqttv31", "-q", "1", "-r", "-t", "k/v31/r", "-m", "from-3.1",
            ],
        ),
    )
    .await;
    assert!(ok, "mosquitto_pub -V mqttv31 failed: {err}");
    let (ok, out, err) = mosquitto_wait(sub, SECS).await;
    assert!(ok, "mosquitto_sub -V mqttv31 failed: {err}");
    assert_eq!(out.trim(), "from-3.1");
    assert_eq!(modern.wait_topic("k/v31/r", SECS).await.text(), "from-3.1");
}

/// MQTT-3.1.2-24: keep-alive K: closed after 1.5 K without any packet, and
/// the will is published (MQTT-3.1.2-8).
#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_and_fires_the_will_mqtt_3_1_2_24() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["c/ka/#"], rumqttc::QoS::AtLeastOnce).await;
    let will = Will {
        topic: "c/ka/silent",
        payload: b"expired",
        qos: 1,
        retain: false,
    };
    let (mut s, outcome) =
        raw::connect_raw(gw.port, &raw::connect("c-ka", true, 1, None, Some(will))).await;
    assert_eq!(outcome, ConnectOutcome::connack(0));
    // keep-alive 1 s: the broker must close after 1.5 s of silence
    assert!(
        raw::closed_within(&mut s, Duration::from_secs(5)).await,
        "a silent client with keep-alive 1s was not disconnected"
    );
    assert_eq!(sub.wait_topic("c/ka/silent", SECS).await.text(), "expired");
}

/// MQTT-3.1.2-24 the other way round: a client that sends PINGREQ within
/// its keep-alive stays connected (MQTT-3.12.4-1: each gets a PINGRESP).
#[tokio::test]
async fn pingreq_within_keep_alive_keeps_the_connection_mqtt_3_12_4_1() {
    let gw = Gateway::start(&yaml(""));
    let (mut c, _) = Raw::open(gw.port, &raw::connect("k-ping", true, 1, None, None)).await;
    for _ in 0..6 {
        // the client's own pace (half its keep-alive), not synchronisation
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(&raw::PINGREQ).await;
        c.expect(raw::PINGRESP, SECS).await;
    }
}

/// §3.1.2.10: keep-alive 0 turns the mechanism off: an idle client stays
/// connected well past what 1.5 x a 1 s keep-alive would allow.
#[tokio::test]
async fn keep_alive_zero_is_accepted_and_never_expires() {
    let gw = Gateway::start(&yaml(""));
    let (mut s, outcome) =
        raw::connect_raw(gw.port, &raw::connect("c-ka0", true, 0, None, None)).await;
    assert_eq!(outcome, ConnectOutcome::connack(0));
    assert!(
        !raw::closed_within(&mut s, Duration::from_secs(4)).await,
        "a keep-alive 0 client was disconnected while idle"
    );
    let mut c = Raw { s };
    c.send(&raw::PINGREQ).await;
    c.expect(raw::PINGRESP, SECS).await;
}

/// Malformed CONNECTs are never accepted (no CONNACK 0) and are closed;
/// a first packet other than CONNECT is closed unanswered (MQTT-3.1.0-1).
/// Each case names its statement.
#[tokio::test]
async fn malformed_connects_and_packets_before_connect_are_refused() {
    let gw = Gateway::start(&yaml(""));
    let n = |rule, what, bytes| Case {
        rule,
        what,
        before: Before::Nothing,
        bytes,
    };
    let all = vec![
        n(
            "MQTT-3.1.0-1",
            "PUBLISH before CONNECT",
            raw::publish("v/bad", b"x", 0, false, 0),
        ),
        n(
            "MQTT-3.1.0-1",
            "SUBSCRIBE before CONNECT",
            raw::subscribe(1, "v/#", 0),
        ),
        n(
            "MQTT-3.1.0-1",
            "PINGREQ before CONNECT",
            raw::PINGREQ.to_vec(),
        ),
        n(
            "MQTT-3.1.2-3",
            "CONNECT reserved flag bit 0",
            raw::connect_fields(0x03, 30, &[b"v-c1"]),
        ),
        n(
            "MQTT-3.1.2-13",
            "CONNECT will QoS without will flag",
            raw::connect_fields(0x0A, 30, &[b"v-c2"]),
        ),
        n(
            "MQTT-3.1.2-15",
            "CONNECT will retain without will flag",
            raw::connect_fields(0x22, 30, &[b"v-c3"]),
        ),
        n(
            "MQTT-3.1.2-14",
            "CONNECT will QoS 3",
            raw::connect_fields(0x1E, 30, &[b"v-c4", b"v/w", b"m"]),
        ),
        n(
            "MQTT-3.1.2-22",
            "CONNECT password without user name",
            raw::connect_fields(0x42, 30, &[b"v-c5", b"pw"]),
        ),
        n(
            "MQTT-1.5.3-1",
            "CONNECT client id invalid UTF-8",
            raw::connect_fields(0x02, 30, &[BAD_UTF8]),
        ),
        n(
            "MQTT-1.5.3-2",
            "CONNECT client id with U+0000",
            raw::connect_fields(0x02, 30, &[NUL]),
        ),
        n(
            "MQTT-1.5.3-1",
            "CONNECT user name invalid UTF-8",
            raw::connect_fields(0x82, 30, &[b"v-c6", BAD_UTF8]),
        ),
        n(
            "MQTT-1.5.3-1",
            "CONNECT will topic invalid UTF-8",
            raw::connect_fields(0x06, 30, &[b"v-c7", BAD_UTF8, b"m"]),
        ),
        n(
            "MQTT-1.5.3-2",
            "CONNECT will topic with U+0000",
            raw::connect_fields(0x06, 30, &[b"v-c8", NUL, b"m"]),
        ),
        n(
            "MQTT-3.3.2-2",
            "CONNECT will topic with +",
            raw::connect_fields(0x06, 30, &[b"v-c9", b"v/+", b"m"]),
        ),
        n(
            "MQTT-3.3.2-2",
            "CONNECT will topic with #",
            raw::connect_fields(0x06, 30, &[b"v-c10", b"v/#", b"m"]),
        ),
        n(
            "MQTT-4.7.3-1",
            "CONNECT empty will topic",
            raw::connect_fields(0x06, 30, &[b"v-c11", b"", b"m"]),
        ),
    ];
    let failures = run_all(gw.port, &all).await;
    assert!(failures.is_empty(), "mishandled:\n{}", failures.join("\n"));
}
