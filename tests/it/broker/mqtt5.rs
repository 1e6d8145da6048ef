//! MQTT 5.0 clients on the embedded broker. Packets a test sends are
//! encoded by rumqttc's independent v5 codec (`rumqttc::v5::mqttbytes`)
//! and what the broker sends is decoded by it, so a wrong field cannot
//! hide behind our own codec; real clients too: mosquitto_pub/sub
//! `-V mqttv5` and Python paho-mqtt 2 at `MQTTv5` (request/response).
//! Each test names the normative statements it checks.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::{QoS, v5 as r};

use super::client5::{Client5, props};
use super::raw::{self, Raw};
use super::{SECS, local_args, mosquitto, mosquitto_spawn, yaml};
use crate::support::Gateway;

/// MQTT-3.2.2: CONNACK tells a 5.0 client the broker's limits and the id
/// it assigned (MQTT-3.2.2-16); a CONNECT with an authentication method
/// gets 0x8C (no enhanced authentication).
#[tokio::test]
async fn connack_announces_the_limits_and_an_assigned_id() {
    let gw = Gateway::start(&yaml(""));
    let (_c, ack) = Client5::connect(gw.port, "", true, props()).await;
    assert_eq!(ack.code, r::ConnectReturnCode::Success);
    let p = ack.properties.expect("CONNACK properties");
    assert!(
        p.assigned_client_identifier
            .is_some_and(|id| id.starts_with("auto-"))
    );
    assert_eq!(p.topic_alias_max, Some(10));
    assert_eq!(p.receive_max, Some(100));
    assert!(p.max_packet_size.is_some_and(|m| m > 256 * 1024));
    let mut auth = props();
    auth.authentication_method = Some("SCRAM-SHA-1".into());
    let mut c = Client5::open(gw.port).await;
    c.send(r::Packet::Connect(
        r::Connect {
            keep_alive: 30,
            client_id: "auth".into(),
            clean_start: true,
            properties: Some(auth),
        },
        None,
        None,
    ))
    .await;
    match c.next(SECS).await {
        Some(r::Packet::ConnAck(a)) => {
            assert_eq!(a.code, r::ConnectReturnCode::BadAuthenticationMethod)
        }
        other => panic!("{other:?}"),
    }
}

/// MQTT-3.3.2-4/-15/-16/-17/-20: the properties of a PUBLISH reach 5.0
/// subscribers unchanged; MQTT-3.3.2-6 the expiry left is sent;
/// MQTT-3.3.4-3 the subscription identifier comes with the message; a
/// 3.1.1 subscriber gets the same message without properties.
#[tokio::test]
async fn properties_identifiers_and_expiry_reach_mqtt5_subscribers() {
    let gw = Gateway::start(&yaml(""));
    let (mut sub, _) = Client5::connect(gw.port, "p5-sub", true, props()).await;
    sub.subscribe(1, r::Filter::new("req/#", QoS::AtLeastOnce), Some(7))
        .await;
    let mut old = Raw::connect(gw.port, "p5-old").await;
    assert_eq!(old.subscribe(1, "req/#", 1).await, 1);
    let (mut publisher, _) = Client5::connect(gw.port, "p5-pub", true, props()).await;
    let sent = r::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: None,
        response_topic: Some("resp/p5-pub".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("site".into(), "a".into()), ("site".into(), "b".into())],
        subscription_identifiers: vec![],
        content_type: Some("application/json".into()),
    };
    publisher
        .publish("req/x", b"{}", QoS::AtLeastOnce, 1, Some(sent.clone()))
        .await;
    let got = sub.publish_in(SECS).await;
    let p = got.properties.expect("properties");
    assert_eq!(p.response_topic, sent.response_topic);
    assert_eq!(p.correlation_data, sent.correlation_data);
    assert_eq!(
        p.user_properties, sent.user_properties,
        "in order, repeated keys kept"
    );
    assert_eq!(p.content_type, sent.content_type);
    assert_eq!(p.payload_format_indicator, Some(1));
    assert!(
        p.message_expiry_interval
            .is_some_and(|s| (1..=60).contains(&s))
    );
    assert_eq!(p.subscription_identifiers, vec![7]);
    assert_eq!(old.publish_in(SECS).await.payload, b"{}");
}

/// MQTT-3.3.2-10..12: a topic alias the client sets stands for its topic
/// later; one over the Topic Alias Maximum gets DISCONNECT 0x94.
#[tokio::test]
async fn topic_aliases_from_the_client_and_one_too_many() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Raw::connect(gw.port, "alias-sub").await;
    assert_eq!(sub.subscribe(1, "long/topic/name", 0).await, 0);
    let (mut c, _) = Client5::connect(gw.port, "alias-pub", true, props()).await;
    let alias = |a| {
        Some(r::PublishProperties {
            topic_alias: Some(a),
            ..Default::default()
        })
    };
    c.publish("long/topic/name", b"one", QoS::AtMostOnce, 0, alias(3))
        .await;
    c.publish("", b"two", QoS::AtMostOnce, 0, alias(3)).await;
    let payloads: Vec<Vec<u8>> = vec![
        sub.publish_in(SECS).await.payload,
        sub.publish_in(SECS).await.payload,
    ];
    assert_eq!(payloads, [b"one".to_vec(), b"two".to_vec()]);
    c.publish("t", b"x", QoS::AtMostOnce, 0, alias(11)).await;
    assert_eq!(c.disconnect_reason().await, 0x94);
}

/// Section 3.3.2.3.4 the other way: a client that offers a Topic Alias
/// Maximum of 2 gets the broker's aliases, the topic once, then an empty
/// topic and the alias; a third topic goes by name (the maximum is never
/// passed, MQTT-3.3.2-9); a client that offers none gets none (MQTT-3.3.2-8).
/// What arrives is decoded by rumqttc's codec.
#[tokio::test]
async fn the_broker_uses_the_aliases_a_client_offers() {
    let gw = Gateway::start(&yaml(""));
    let mut offered = props();
    offered.topic_alias_max = Some(2);
    let (mut sub, _) = Client5::connect(gw.port, "alias-offer", true, offered).await;
    sub.subscribe(1, r::Filter::new("al/#", QoS::AtMostOnce), None)
        .await;
    let (mut plain, _) = Client5::connect(gw.port, "alias-none", true, props()).await;
    plain
        .subscribe(1, r::Filter::new("al/#", QoS::AtMostOnce), None)
        .await;
    let mut p = Raw::connect(gw.port, "alias-src").await;
    for t in ["al/first", "al/first", "al/second", "al/third", "al/second"] {
        p.send(&raw::publish(t, t.as_bytes(), 0, false, 0)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let m = sub.publish_in(SECS).await;
        let alias = m.properties.as_ref().and_then(|p| p.topic_alias);
        seen.push((String::from_utf8_lossy(&m.topic).into_owned(), alias));
    }
    let want = [
        ("al/first", Some(1)),
        ("", Some(1)),
        ("al/second", Some(2)),
        ("al/third", None),
        ("", Some(2)),
    ];
    let want: Vec<(String, Option<u16>)> = want.iter().map(|(t, a)| (t.to_string(), *a)).collect();
    assert_eq!(seen, want);
    for _ in 0..5 {
        let m = plain.publish_in(SECS).await;
        assert!(
            !m.topic.is_empty(),
            "no alias to a client that offered none"
        );
        assert_eq!(m.properties.and_then(|p| p.topic_alias), None);
    }
}

/// MQTT-3.3.4-7: more QoS 2 PUBLISHes unacknowledged (no PUBREL) than the
/// Receive Maximum the broker announced: DISCONNECT 0x93.
#[tokio::test]
async fn receive_maximum_exceeded_is_disconnected_with_0x93() {
    let gw = Gateway::start(&yaml("max_inflight: 5"));
    let (mut c, ack) = Client5::connect(gw.port, "rm", true, props()).await;
    assert_eq!(ack.properties.and_then(|p| p.receive_max), Some(5));
    for i in 1..=6u16 {
        c.publish("rm/x", b"x", QoS::ExactlyOnce, i, None).await;
    }
    assert_eq!(c.disconnect_reason().await, 0x93);
}

/// MQTT-3.8.3-3: no local; MQTT-3.3.1-9..11: retain handling 1 and 2;
/// MQTT-3.3.1-12: retain as published.
#[tokio::test]
async fn no_local_retain_handling_and_retain_as_published() {
    let gw = Gateway::start(&yaml(""));
    let (mut c, _) = Client5::connect(gw.port, "opts", true, props()).await;
    let mut f = r::Filter::new("o/#", QoS::AtMostOnce);
    f.nolocal = true;
    f.preserve_retain = true;
    f.retain_forward_rule = r::RetainForwardRule::OnNewSubscribe;
    c.subscribe(1, f.clone(), None).await;
    let mut other = Raw::connect(gw.port, "opts-other").await;
    other.send(&raw::publish("o/r", b"kept", 0, true, 0)).await;
    let live = c.publish_in(SECS).await;
    assert!(live.retain, "retain as published");
    c.publish("o/own", b"mine", QoS::AtMostOnce, 0, None).await;
    c.subscribe(2, f.clone(), None).await; // not new: no retained (1)
    assert!(
        c.publishes_until_quiet(Duration::from_millis(500))
            .await
            .is_empty(),
        "own message or retained sent again"
    );
    let (mut fresh, _) = Client5::connect(gw.port, "opts-never", true, props()).await;
    let mut never = r::Filter::new("o/#", QoS::AtMostOnce);
    never.retain_forward_rule = r::RetainForwardRule::Never;
    fresh.subscribe(1, never, None).await;
    assert!(
        fresh
            .publishes_until_quiet(Duration::from_millis(500))
            .await
            .is_empty(),
        "retain handling 2"
    );
}

/// MQTT-3.1.2-23 and 3.1.2.11.2: a session with an expiry interval
/// outlives its connection (session present on return, queued QoS 1
/// delivered) and is gone once the interval has passed.
#[tokio::test]
async fn session_expiry_keeps_the_session_then_ends_it() {
    let gw = Gateway::start(&yaml(""));
    let mut expiring = props();
    expiring.session_expiry_interval = Some(2);
    let (mut c, ack) = Client5::connect(gw.port, "exp5", false, expiring.clone()).await;
    assert!(!ack.session_present);
    c.subscribe(1, r::Filter::new("exp/#", QoS::AtLeastOnce), None)
        .await;
    c.send(r::Packet::Disconnect(r::Disconnect::new(
        r::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    drop(c);
    let mut p = Raw::connect(gw.port, "exp-pub").await;
    p.send(&raw::publish("exp/x", b"while away", 1, false, 1))
        .await;
    p.expect(raw::PUBACK, SECS).await;
    let (mut back, ack) = Client5::connect(gw.port, "exp5", false, expiring.clone()).await;
    assert!(ack.session_present);
    assert_eq!(back.publish_in(SECS).await.payload, b"while away".as_ref());
    drop(back);
    gw.wait_log(
        "persistent sessions of clients that did not come back removed",
        SECS,
    );
    let (_c, ack) = Client5::connect(gw.port, "exp5", false, expiring).await;
    assert!(!ack.session_present, "the session outlived its expiry");
}

/// MQTT-4.13.1-1 / 2.4: a malformed or protocol-breaking packet gets a
/// DISCONNECT with its reason code before the close: a property given
/// twice (0x82), a property that does not belong in the packet (0x81).
#[tokio::test]
async fn bad_properties_get_disconnect_with_the_reason() {
    let gw = Gateway::start(&yaml(""));
    for (props_bytes, code) in [
        // Message Expiry Interval twice
        (&[0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1][..], 0x82u8),
        // Session Expiry Interval in a PUBLISH
        (&[0x05, 0x11, 0, 0, 0, 1][..], 0x81),
    ] {
        let (mut c, _) = Client5::connect(gw.port, "badprop", true, props()).await;
        let mut body = vec![0, 1, b't'];
        body.extend_from_slice(props_bytes);
        body.extend_from_slice(b"x");
        let mut pkt = vec![0x30];
        raw::remaining_length(body.len(), &mut pkt);
        pkt.extend(body);
        c.send_raw(&pkt).await;
        assert_eq!(c.disconnect_reason().await, code);
    }
}

/// mosquitto's MQTT 5 clients: a user property set with `-D PUBLISH
/// user-property` reaches `mosquitto_sub -V mqttv5 -F %P`.
#[tokio::test]
async fn mosquitto_clients_at_mqtt5_pass_user_properties() {
    let gw = Gateway::start(&yaml(""));
    let port = gw.port.to_string();
    let sub = mosquitto_spawn(
        "mosquitto_sub",
        &local_args(
            &port,
            &[
                "-V", "mqttv5", "-t", "m5/t", "-C", "1", "-W", "10", "-F", "%P %p",
            ],
        ),
    );
    let mut watcher = Raw::connect(gw.port, "m5-watch").await;
    assert_eq!(watcher.subscribe(1, "m5/ready", 0).await, 0);
    // retained: mosquitto_sub gets it whenever it subscribes
    let (ok, _, err) = mosquitto(
        "mosquitto_pub",
        &local_args(
            &port,
            &[
                "-V",
                "mqttv5",
                "-t",
                "m5/t",
                "-m",
                "hello",
                "-r",
                "-D",
                "PUBLISH",
                "user-property",
                "line",
                "7",
            ],
        ),
    )
    .await;
    assert!(ok, "{err}");
    let out = tokio::time::timeout(SECS, sub.wait_with_output())
        .await
        .expect("mosquitto_sub in time")
        .expect("mosquitto_sub output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line:7") && text.contains("hello"), "{text}");
}

/// Request / response across the broker with Python paho-mqtt 2 at
/// MQTTv5: a responder answers on the request's Response Topic with its
/// Correlation Data; the requester gets the answer it can match
/// (MQTT-3.3.2-15/-16 passed unchanged).
const PAHO_REQUEST_RESPONSE: &str = r#"
import sys, threading, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port = int(sys.argv[1])
V2, V5 = mqtt.CallbackAPIVersion.VERSION2, mqtt.MQTTv5
done = threading.Event()
def on_request(c, u, msg):
    p = Properties(PacketTypes.PUBLISH)
    p.CorrelationData = msg.properties.CorrelationData
    c.publish(msg.properties.ResponseTopic, b"answer:" + msg.payload, qos=1, properties=p)
def on_response(c, u, msg):
    if msg.properties.CorrelationData == b"req-42" and msg.payload == b"answer:ping":
        done.set()
responder = mqtt.Client(V2, client_id="responder", protocol=V5)
responder.on_message = on_request
responder.connect("127.0.0.1", port)
responder.subscribe("svc/req", qos=1)
responder.loop_start()
requester = mqtt.Client(V2, client_id="requester", protocol=V5)
requester.on_message = on_response
requester.connect("127.0.0.1", port)
requester.subscribe("svc/resp/requester", qos=1)
requester.loop_start()
import time; time.sleep(0.5)
p = Properties(PacketTypes.PUBLISH)
p.ResponseTopic = "svc/resp/requester"
p.CorrelationData = b"req-42"
requester.publish("svc/req", b"ping", qos=1, properties=p)
sys.exit(0 if done.wait(10) else 1)
"#;

#[tokio::test]
async fn paho_mqtt5_request_response_through_the_broker() {
    let gw = Gateway::start(&yaml(""));
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("python3")
            .args(["-c", PAHO_REQUEST_RESPONSE, &gw.port.to_string()])
            .output(),
    )
    .await
    .expect("paho in time")
    .expect("run python3");
    assert!(
        out.status.success(),
        "paho request/response failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// MQTT.js 5 (the client inside Node-RED and MQTTX, from npm; `.ci/run`
/// installs it with `npm ci` in tests/js) at protocol 5: connect,
/// subscribe with an identifier, publish with user properties, response
/// topic, correlation data and content type, and get them back unchanged.
#[tokio::test]
async fn mqtt_js_at_protocol_5_round_trips_properties() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    if !std::path::Path::new(dir).join("node_modules/mqtt").is_dir() {
        eprintln!("SKIPPED: MQTT.js not installed (npm ci --prefix tests/js; .ci/run does it)");
        return;
    }
    let gw = Gateway::start(&yaml(""));
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("node")
            .arg(format!("{dir}/mqtt5_client.js"))
            .arg(gw.port.to_string())
            .output(),
    )
    .await
    .expect("node in time")
    .expect("run node");
    assert!(
        out.status.success(),
        "MQTT.js failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects `id` with a will on `topic` held back `delay` seconds, a
/// session of a minute, and closes the socket without DISCONNECT.
async fn vanish_with_will(port: u16, id: &str, topic: &str, delay: u32) {
    let mut c = Client5::open(port).await;
    let mut p = props();
    p.session_expiry_interval = Some(60);
    let will = r::LastWill {
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        message: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(r::LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("why".into(), "vanished".into())],
        }),
    };
    let connect = r::Connect {
        keep_alive: 30,
        client_id: id.into(),
        clean_start: true,
        properties: Some(p),
    };
    c.send(r::Packet::Connect(connect, Some(will), None)).await;
    assert!(matches!(c.next(SECS).await, Some(r::Packet::ConnAck(_))));
    drop(c);
}

/// MQTT-3.1.3-9: the will waits its Will Delay Interval and goes out with
/// its properties (MQTT-3.1.3-10); a client back within the delay cancels it.
#[tokio::test]
async fn a_will_waits_its_delay_and_a_client_back_in_time_cancels_it() {
    let gw = Gateway::start(&yaml(""));
    let (mut watch, _) = Client5::connect(gw.port, "will-watch", true, props()).await;
    watch
        .subscribe(1, r::Filter::new("wills/#", QoS::AtLeastOnce), None)
        .await;
    vanish_with_will(gw.port, "will-late", "wills/late", 2).await;
    let gone = std::time::Instant::now();
    vanish_with_will(gw.port, "will-back", "wills/back", 2).await;
    // back within the delay, resuming its session: no will
    let mut resume = props();
    resume.session_expiry_interval = Some(60);
    let (_back, ack) = Client5::connect(gw.port, "will-back", false, resume).await;
    assert!(ack.session_present);
    assert!(
        watch
            .publishes_until_quiet(Duration::from_millis(1_000))
            .await
            .is_empty(),
        "a will went out before its delay"
    );
    let will = watch.publish_in(Duration::from_secs(5)).await;
    let waited = gone.elapsed();
    assert_eq!(&will.topic[..], b"wills/late");
    assert!(waited >= Duration::from_secs(2), "sent after {waited:?}");
    let p = will.properties.expect("will properties");
    assert_eq!(p.user_properties, vec![("why".into(), "vanished".into())]);
    assert!(
        watch
            .publishes_until_quiet(Duration::from_millis(2_500))
            .await
            .is_empty(),
        "the will of the client that came back was sent"
    );
}

/// A client that offers the largest Topic Alias Maximum gets at most the
/// broker's `max_topic_alias` (10) aliases: each keeps a topic name in the
/// broker's memory for the connection's life; topics past it go by name.
#[tokio::test]
async fn the_brokers_aliases_stop_at_its_own_maximum() {
    let gw = Gateway::start(&yaml(""));
    let mut greedy = props();
    greedy.topic_alias_max = Some(u16::MAX);
    let (mut sub, _) = Client5::connect(gw.port, "alias-greedy", true, greedy).await;
    sub.subscribe(1, r::Filter::new("many/#", QoS::AtMostOnce), None)
        .await;
    let mut p = Raw::connect(gw.port, "alias-many").await;
    for i in 0..12 {
        let t = format!("many/t{i}");
        p.send(&raw::publish(&t, b"x", 0, false, 0)).await;
    }
    let mut aliases = Vec::new();
    for _ in 0..12 {
        let m = sub.publish_in(SECS).await;
        assert!(!m.topic.is_empty(), "each topic's first message names it");
        aliases.push(m.properties.and_then(|p| p.topic_alias));
    }
    let want: Vec<Option<u16>> = (1..=10).map(Some).chain([None, None]).collect();
    assert_eq!(aliases, want);
}
