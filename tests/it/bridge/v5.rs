//! The MQTT 5 uplink (`uplink.protocol: 5`) against a real mosquitto 2 in
//! MQTT 5 mode: the broker's Receive Maximum bounds the messages in
//! flight (counted on the wire by a tap between the two), a topic the
//! broker's ACL denies (PUBACK 0x87) is dead-lettered at once with no
//! reconnect while the rest arrive, message expiry is sent as what is left
//! after a 20 s outage with a SIGKILL (and a message past it is dropped),
//! backfilled messages carry the replay user properties and live ones do
//! not, topic aliases are used on the wire, and a command keeps its
//! request/response properties when published locally.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet as V5Packet, PublishProperties};
use rumqttc::v5::{Event as V5Event, MqttOptions as V5Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::poison::{metric, yaml};
use crate::bridge::{SECS, publish_all};
use crate::support::{ConfigDir, Gateway, fieldgate};
use crate::upstream::{Mosquitto, Proxy};

/// `uplink:` lines of an MQTT 5 uplink, beside the `gw1/#` forward entry
/// of `bridge_poison`'s config.
const V5: &str = "  protocol: 5";

/// A subscriber to `site/#` on the broker at `broker`, and a gateway
/// whose MQTT 5 uplink reaches it through `via` (a tap or a proxy), with
/// `uplink` lines added, once its `online` arrived; and its metrics port.
async fn linked(broker: u16, via: u16, uplink: &str) -> (Sub5, Gateway, u16) {
    let mut up = Sub5::connect(broker, "site/#").await;
    let mport = crate::support::free_port();
    let url = format!("mqtt://127.0.0.1:{via}");
    let gw = Gateway::start(&yaml(&url, uplink, "", mport));
    up.take("site/gw1/status", 1, SECS, &gw).await;
    (up, gw, mport)
}

/// What the tap saw on the wire from the gateway to the broker.
#[derive(Debug, Default)]
struct Seen {
    connects: usize,
    publishes: usize,
    /// PUBLISH packets with an empty topic (sent under a topic alias).
    aliased: usize,
    /// Bytes of every PUBLISH packet, headers included.
    publish_bytes: usize,
    /// QoS 1 packet ids sent and not yet PUBACKed, and the most at once.
    in_flight: HashSet<u16>,
    max_in_flight: usize,
}

/// A TCP relay that reads the MQTT 5 packets passing through it.
struct Tap {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Tap {
    async fn start(target: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                tokio::spawn(relay(inbound, outbound, s.clone()));
            }
        });
        Tap { port, seen }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("tap lock"))
    }
}

async fn relay(inbound: TcpStream, outbound: TcpStream, seen: Arc<Mutex<Seen>>) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    let s = seen.clone();
    let up = async move {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = in_r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for (head, body) in frames.push(&buf[..n]) {
                client_packet(&mut s.lock().expect("tap lock"), head, &body);
            }
            if out_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = out_r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for (head, body) in frames.push(&buf[..n]) {
                if head >> 4 == 4 && body.len() >= 2 {
                    let pkid = u16::from_be_bytes([body[0], body[1]]);
                    seen.lock().expect("tap lock").in_flight.remove(&pkid);
                }
            }
            if in_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// One packet from the gateway.
fn client_packet(s: &mut Seen, head: u8, body: &[u8]) {
    match head >> 4 {
        1 => s.connects += 1,
        3 => {
            s.publishes += 1;
            let len = body.len() + 1 + remaining_len_len(body.len());
            s.publish_bytes += len;
            let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
            if topic_len == 0 {
                s.aliased += 1;
            }
            if (head >> 1) & 3 == 1 {
                let at = 2 + topic_len;
                s.in_flight
                    .insert(u16::from_be_bytes([body[at], body[at + 1]]));
                s.max_in_flight = s.max_in_flight.max(s.in_flight.len());
            }
        }
        _ => {}
    }
}

fn remaining_len_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// MQTT framing of a byte stream: whole packets as (first byte, body).
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
            let complete = loop {
                let Some(b) = self.buf.get(i) else {
                    break false;
                };
                len += (*b as usize & 0x7f) * mult;
                mult *= 128;
                i += 1;
                if b & 0x80 == 0 {
                    break true;
                }
            };
            if !complete || self.buf.len() < i + len {
                return out;
            }
            let body = self.buf[i..i + len].to_vec();
            out.push((self.buf[0], body));
            self.buf.drain(..i + len);
        }
    }
}

/// A received message with its MQTT 5 properties.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: String,
    expiry: Option<u32>,
    user: Vec<(String, String)>,
    response_topic: Option<String>,
    correlation: Option<Vec<u8>>,
}

/// An MQTT 5 subscriber on the upstream broker (rumqttc's v5 client).
struct Sub5 {
    rx: tokio::sync::mpsc::UnboundedReceiver<Got>,
    _client: rumqttc::v5::AsyncClient,
}

impl Sub5 {
    async fn connect(port: u16, filter: &str) -> Sub5 {
        let mut opts = V5Options::new(format!("v5-sub-{port}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (subscribed, ready) = tokio::sync::oneshot::channel();
        let mut subscribed = Some(subscribed);
        client
            .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(V5Event::Incoming(V5Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(V5Event::Incoming(V5Packet::Publish(p))) => {
                        let props = p.properties.clone().unwrap_or_default();
                        let _ = tx.send(Got {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            expiry: props.message_expiry_interval,
                            user: props.user_properties,
                            response_topic: props.response_topic,
                            correlation: props.correlation_data.map(|c| c.to_vec()),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(SECS, ready)
            .await
            .expect("SUBACK in time")
            .expect("subscribed");
        Sub5 {
            rx,
            _client: client,
        }
    }

    /// Messages on `topic` until `n` distinct payloads arrived (or panics
    /// after `within`), in arrival order, duplicates dropped.
    async fn take(&mut self, topic: &str, n: usize, within: Duration, gw: &Gateway) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got: Vec<Got> = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) if m.topic == topic => {
                    if !got.iter().any(|g| g.payload == m.payload) {
                        got.push(m);
                    }
                }
                Ok(Some(_)) => {}
                _ => panic!(
                    "{} of {n} on {topic}: {got:?}; log:\n{}",
                    got.len(),
                    gw.log_text()
                ),
            }
        }
        got
    }

    /// Whatever arrives on `topic` within `within`.
    async fn quiet(&mut self, topic: &str, within: Duration) -> Vec<Got> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if m.topic == topic {
                got.push(m);
            }
        }
        got
    }
}

/// Publishes one QoS 1 message with `props` from an MQTT 5 client `id`,
/// once its PUBACK arrived.
async fn publish5(port: u16, id: &str, topic: &str, payload: &str, props: PublishProperties) {
    let (client, mut el) = rumqttc::v5::AsyncClient::new(V5Options::new(id, "127.0.0.1", port), 10);
    client
        .publish_with_properties(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload.to_string(),
            props,
        )
        .await
        .expect("publish");
    let acked = async {
        loop {
            match el.poll().await {
                Ok(V5Event::Incoming(V5Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("{id}: {e}"),
            }
        }
    };
    tokio::time::timeout(SECS, acked)
        .await
        .expect("PUBACK in time");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn numbered(topic: &str, n: usize, tag: &str) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (topic.to_string(), format!("{tag}-{i}").into_bytes()))
        .collect()
}

#[tokio::test]
async fn the_window_never_exceeds_the_brokers_receive_maximum() {
    // mosquitto sends max_inflight_messages as its Receive Maximum
    let broker = Mosquitto::start_with("max_inflight_messages 5\n");
    let tap = Tap::start(broker.port).await;
    let (mut up, mut gw, _) = linked(broker.port, tap.port, V5).await;
    let n = 300;
    publish_all(
        gw.port,
        "local-rm",
        numbered("gw1/hmi/v", n, "m").into_iter(),
        SECS,
    )
    .await;
    up.take("site/gw1/hmi/v", n, Duration::from_secs(30), &gw)
        .await;
    let (max, connects) = tap.seen(|s| (s.max_in_flight, s.connects));
    eprintln!("MQTT 5 uplink: at most {max} QoS 1 messages in flight (Receive Maximum 5)");
    assert!(max <= 5, "{max} in flight, over the Receive Maximum of 5");
    assert!(
        max >= 2,
        "the window was not used at all ({max}): the test shows nothing"
    );
    assert_eq!(
        connects,
        1,
        "the uplink reconnected; log:\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text().contains("Receive Maximum"),
        "not said in the log"
    );
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn a_topic_the_acl_denies_is_dead_lettered_at_once_without_a_reconnect() {
    // mosquitto answers a denied PUBLISH of an MQTT 5 client with PUBACK 0x87
    let dir = tempfile::tempdir().expect("dir");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic deny site/gw1/hmi/denied\ntopic readwrite site/#\n",
    )
    .expect("acl");
    // max_queued_messages as shipped (1000): with 0 (no limit, the other
    // tests' setting) mosquitto 2.0.11 drops the connection right after
    // it answered a denied QoS 1 PUBLISH (reproduced with a raw client)
    let conf = format!("acl_file {}\nmax_queued_messages 1000\n", acl.display());
    let broker = Mosquitto::start_with(&conf);
    let tap = Tap::start(broker.port).await;
    let (mut up, mut gw, mport) = linked(broker.port, tap.port, V5).await;
    let mut msgs = vec![("gw1/hmi/ok".to_string(), b"before".to_vec())];
    msgs.push(("gw1/hmi/denied".to_string(), b"secret".to_vec()));
    msgs.extend(numbered("gw1/hmi/ok", 20, "after"));
    publish_all(gw.port, "local-acl", msgs.into_iter(), SECS).await;
    let got = up.take("site/gw1/hmi/ok", 21, SECS, &gw).await;
    assert_eq!(got[0].payload, "before");
    let deadline = tokio::time::Instant::now() + SECS;
    while metric(mport, "fieldgate_uplink_dead_total") != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tap.seen(|s| s.connects),
        1,
        "a refusal must not reconnect; log:\n{}",
        gw.log_text()
    );
    assert!(
        up.quiet("site/gw1/hmi/denied", Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(gw.terminate(SECS).success());
    let out = fieldgate(&["outbox", "list", "--dead", "-c", gw.cfg.path_str()]);
    let dead = String::from_utf8_lossy(&out.stdout);
    assert!(dead.contains("site/gw1/hmi/denied"), "{dead}");
    assert!(dead.contains("0x87 (not authorized"), "{dead}");
    // attempts 1: refused once, no neighbour blamed
    assert_eq!(dead.matches("site/gw1/hmi/").count(), 1, "{dead}");
}

#[tokio::test]
async fn message_expiry_is_what_is_left_after_a_20s_outage_with_a_sigkill() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    // two more forward entries, after gw1/#: local topics outside it
    let uplink = "    \
        - { filter: \"plant/short\", prefix: \"site/\", qos: 1, message_expiry: 10s }\n    \
        - { filter: \"plant/long\", prefix: \"site/\", qos: 1, message_expiry: 1h }\n  \
        protocol: 5";
    let (mut up, mut gw, mport) = linked(broker.port, proxy.port, uplink).await;
    proxy.cut();
    let mut msgs = numbered("plant/long", 5, "long");
    msgs.extend(numbered("plant/short", 5, "short"));
    publish_all(gw.port, "local-exp", msgs.into_iter(), SECS).await;
    crate::bridge::wait_outbox(&gw, 10).await;
    let outage = std::time::Instant::now();
    gw.kill();
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    drop(gw);
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.restore();
    let mut gw = Gateway::spawn(cfg, port, &[]);
    let long = up.take("site/plant/long", 5, SECS, &gw).await;
    let waited = outage.elapsed().as_secs() as u32;
    for m in &long {
        let left = m.expiry.expect("a message expiry interval");
        // what was left when sent; mosquitto takes off the time it held it
        assert!(
            left <= 3600 - 20 && left + waited + 5 >= 3600,
            "{left} s left after {waited} s: {m:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + SECS;
    while metric(
        mport,
        "fieldgate_uplink_dropped_total{reason=\"message_expiry\"}",
    ) != 5
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired messages were not counted; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stale = up.quiet("site/plant/short", Duration::from_secs(1)).await;
    assert!(stale.is_empty(), "sent stale: {stale:?}");
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn backfilled_messages_carry_the_replay_properties_and_live_ones_do_not() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let (mut up, mut gw, _) = linked(broker.port, proxy.port, V5).await;
    proxy.cut();
    let before = now_ms();
    publish_all(
        gw.port,
        "local-old",
        numbered("gw1/hmi/v", 3, "old").into_iter(),
        SECS,
    )
    .await;
    let after = now_ms();
    crate::bridge::wait_outbox(&gw, 3).await;
    proxy.restore();
    let old = up
        .take("site/gw1/hmi/v", 3, Duration::from_secs(20), &gw)
        .await;
    for m in &old {
        let replay = m.user.iter().find(|(k, _)| k == "fieldgate-replay");
        assert_eq!(replay.map(|(_, v)| v.as_str()), Some("1"), "{m:?}");
        let ts: i64 = m
            .user
            .iter()
            .find(|(k, _)| k == "fieldgate-ts")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no fieldgate-ts: {m:?}"));
        assert!(
            (before..=after + 1000).contains(&ts),
            "{ts} not in {before}..{after}"
        );
    }
    publish_all(
        gw.port,
        "local-new",
        numbered("gw1/hmi/v", 3, "new").into_iter(),
        SECS,
    )
    .await;
    let new = up.take("site/gw1/hmi/v", 3, SECS, &gw).await;
    for m in &new {
        assert!(m.payload.starts_with("new"), "{m:?}");
        assert!(m.user.is_empty(), "a live message marked as replay: {m:?}");
    }
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn topic_aliases_are_used_on_the_wire_and_topics_arrive_whole() {
    // mosquitto's max_topic_alias (10 by default) is its Topic Alias Maximum
    let broker = Mosquitto::start();
    let tap = Tap::start(broker.port).await;
    let (mut up, mut gw, _) = linked(broker.port, tap.port, V5).await;
    let topic = "gw1/plant-hall-3/line-7/boiler-feed-pump/discharge-pressure";
    publish_all(
        gw.port,
        "local-alias",
        numbered(topic, 50, "p").into_iter(),
        SECS,
    )
    .await;
    let got = up.take(&format!("site/{topic}"), 50, SECS, &gw).await;
    assert_eq!(got.len(), 50);
    let (aliased, publishes) = tap.seen(|s| (s.aliased, s.publishes));
    assert!(
        aliased >= 48,
        "{aliased} of {publishes} PUBLISH packets went under an alias"
    );
    assert!(gw.terminate(SECS).success());
}

#[test]
fn a_protocol_that_is_not_one_exits_78_naming_the_key() {
    let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  protocol: 4.2\n  forward: [{ filter: \"gw/#\", qos: 1, message_expiry: 0s }]\n";
    for (yaml, path) in [
        (yaml.to_string(), "uplink.protocol"),
        (
            yaml.replace("protocol: 4.2", "protocol: 5"),
            "uplink.forward[0].message_expiry",
        ),
    ] {
        let cfg = ConfigDir::new(&yaml);
        let out = fieldgate(&["check", "-c", cfg.path_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains(path), "{path} not named: {err}");
    }
}

#[tokio::test]
async fn request_response_crosses_the_gateway_with_correlation_data() {
    let broker = Mosquitto::start();
    let uplink = "  protocol: 5\n  commands:\n    \
                  - { filter: \"site/gw1/+/+/set\", strip_prefix: \"site/\", qos: 1 }";
    let (mut up, mut gw, _) = linked(broker.port, broker.port, uplink).await;
    let mut local = Sub5::connect(gw.port, "gw1/+/+/set").await;
    // the requester, an MQTT 5 client upstream
    publish5(
        broker.port,
        "requester",
        "site/gw1/valve/open/set",
        "1",
        PublishProperties {
            response_topic: Some("site/gw1/replies/7".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"req-7")),
            user_properties: vec![("who".into(), "scada".into())],
            ..Default::default()
        },
    )
    .await;
    let got = local.take("gw1/valve/open/set", 1, SECS, &gw).await;
    let m = &got[0];
    assert_eq!(m.response_topic.as_deref(), Some("gw1/replies/7"), "{m:?}");
    assert_eq!(m.correlation.as_deref(), Some(&b"req-7"[..]), "{m:?}");
    assert_eq!(m.user, vec![("who".to_string(), "scada".to_string())]);
    // the local responder replies where it was told, with the correlation data
    let reply = PublishProperties {
        correlation_data: m.correlation.clone().map(bytes::Bytes::from),
        user_properties: vec![("status".into(), "done".into())],
        ..Default::default()
    };
    let to = m.response_topic.clone().expect("response topic");
    publish5(gw.port, "responder", &to, "opened", reply).await;
    let got = up.take("site/gw1/replies/7", 1, SECS, &gw).await;
    assert_eq!(got[0].payload, "opened");
    assert_eq!(
        got[0].correlation.as_deref(),
        Some(&b"req-7"[..]),
        "{got:?}"
    );
    assert_eq!(
        got[0].user,
        vec![("status".to_string(), "done".to_string())]
    );
    assert!(gw.terminate(SECS).success());
}
