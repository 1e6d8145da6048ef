//! A PUBACK from the embedded broker is a durability promise: for a QoS 1
//! PUBLISH on a forwarded topic it is sent only once the bridge's intake has
//! committed the message to the outbox. Once the receiver has acknowledged a
//! QoS 1 message it owns it (MQTT-4.3.2-2: the PUBACK is the point at which
//! the sender may discard it), so a SIGKILL at any moment after the PUBACK
//! must not lose the message.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use tokio::sync::watch;

use crate::bridge::{SECS, outbox_messages};
use crate::support::{ConfigDir, Gateway, Sub, options};
use crate::upstream::{Mosquitto, Proxy, gateway_yaml};

const TOPIC: &str = "site/gw1/hmi/seq";
/// Acknowledged messages before the kill.
const ACKED_BEFORE_KILL: usize = 2_000;
/// The local client's in-flight window (publishes waiting for a PUBACK).
const INFLIGHT: u16 = 100;
/// More than the client can publish before the kill: it is still publishing.
const MAX_PUBLISH: u64 = 1_000_000;

/// What the local publisher's event loop saw.
struct Acks {
    /// Sequence numbers whose PUBACK arrived.
    acked: BTreeSet<u64>,
    /// Publishes written to the socket.
    sent: u64,
    /// Why the event loop ended.
    end: String,
}

/// Polls the publisher's event loop until the connection ends; maps each
/// outgoing packet id to its sequence number (publishes leave in request
/// order, and the payload of request `i` is `i`), so a PUBACK names the
/// sequence number it acknowledges.
async fn pump(mut el: rumqttc::EventLoop, count: watch::Sender<usize>) -> Acks {
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    let mut acks = Acks {
        acked: BTreeSet::new(),
        sent: 0,
        end: String::new(),
    };
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let old = by_pkid.insert(pkid, acks.sent);
                assert!(old.is_none(), "packet id {pkid} reused before its PUBACK");
                acks.sent += 1;
            }
            Ok(Event::Incoming(Incoming::PubAck(a))) => {
                let seq = by_pkid
                    .remove(&a.pkid)
                    .unwrap_or_else(|| panic!("PUBACK for unknown packet id {}", a.pkid));
                acks.acked.insert(seq);
                count.send_replace(acks.acked.len());
            }
            Ok(_) => {}
            Err(e) => {
                acks.end = e.to_string();
                return acks;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubacked_qos1_message_survives_a_sigkill_while_publishing() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    proxy.cut();
    let mut up = Sub::connect(broker.port, &["site/gw1/hmi/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut gw = Gateway::start(&gateway_yaml(&url, "1s", ""));

    // a local clean-session client publishes sequence numbers as fast as it can
    let mut opts = options("local-seq", gw.port);
    opts.set_clean_session(true);
    opts.set_inflight(INFLIGHT);
    let (client, el) = AsyncClient::new(opts, 1024);
    let (count_tx, mut count) = watch::channel(0usize);
    let events = tokio::spawn(pump(el, count_tx));
    let publisher = tokio::spawn(async move {
        for i in 0..MAX_PUBLISH {
            let payload = i.to_string().into_bytes();
            if client
                .publish("gw1/hmi/seq", QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return i;
            }
        }
        MAX_PUBLISH
    });

    // SIGKILL mid-stream: the client is still publishing and has PUBLISHes
    // in flight, some of them in an uncommitted batch
    tokio::time::timeout(
        Duration::from_secs(60),
        count.wait_for(|n| *n >= ACKED_BEFORE_KILL),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not {ACKED_BEFORE_KILL} PUBACKs within 60 s; log:\n{}",
            gw.log_text()
        )
    })
    .expect("publisher event loop ended early");
    gw.kill();
    let acks = tokio::time::timeout(SECS, events)
        .await
        .expect("the publisher saw the connection end")
        .expect("pump");
    publisher.abort();
    assert!(
        !acks.end.is_empty() && acks.sent < MAX_PUBLISH,
        "the client had stopped publishing before the kill"
    );
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, ConfigDir::new(""));
    drop(gw);
    let rows = outbox_messages(&cfg);
    let acked = acks.acked.len();
    assert!(
        acks.sent > acked as u64,
        "nothing was in flight at the kill ({} sent, {acked} acked)",
        acks.sent
    );

    // the same data dir again, the uplink back: every acknowledged
    // sequence number must arrive upstream
    let gw = Gateway::spawn(cfg, port, &[]);
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut got: Vec<u64> = Vec::new();
    let mut have: BTreeSet<u64> = BTreeSet::new();
    while !acks.acked.is_subset(&have) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = up.try_next(left).await else {
            let missing: Vec<_> = acks.acked.difference(&have).collect();
            panic!(
                "{} of {acked} PUBACKed messages never arrived upstream (first {:?}); \
                 {} sent, {rows} outbox rows after the kill, {} arrived; log:\n{}",
                missing.len(),
                &missing[..missing.len().min(20)],
                acks.sent,
                have.len(),
                gw.log_text()
            );
        };
        if m.topic == TOPIC {
            let v: u64 = m.text().parse().expect("integer payload");
            got.push(v);
            have.insert(v);
        }
    }
    let dups = got.len() - have.len();
    let unacked = have.difference(&acks.acked).count();
    // the numbers the report quotes
    eprintln!(
        "PUBACK before SIGKILL: {acked} acked of {} sent ({} in flight), {rows} outbox rows \
         after the kill; upstream: {} arrived ({unacked} not acked), {dups} duplicates; \
         client ended with: {}",
        acks.sent,
        acks.sent - acked as u64,
        have.len(),
        acks.end
    );
    let mut gw = gw;
    assert!(gw.terminate(SECS).success());
}
