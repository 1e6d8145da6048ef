//! The MQTT 5 uplink's drain (`uplink.protocol: 5`) beside a plain
//! rumqttc v5 publisher into the same mosquitto, and the bytes on the
//! wire per forwarded reading with topic aliases and without (mosquitto
//! `max_topic_alias 0`), counted by a relay between the bridge and the
//! broker. Deliveries are counted at a subscriber in every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::mosquitto::Mosquitto;
use super::{BACKLOG, backlog, bridge_drain_with, msg, uplink_with};

/// Bytes relayed each way (gateway → broker, broker → gateway).
#[derive(Clone, Default)]
struct Counted {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

/// A TCP relay to `target` that counts the bytes it carries.
async fn relay(target: u16) -> (u16, Counted) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    let counted = Counted::default();
    let c = counted.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::spawn(pump(ir, ow, c.up.clone()));
            tokio::spawn(pump(or, iw, c.down.clone()));
        }
    });
    (port, counted)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(k) = from.read(&mut buf).await {
        if k == 0 || to.write_all(&buf[..k]).await.is_err() {
            return;
        }
        n.fetch_add(k as u64, Relaxed);
    }
}

/// A QoS 1 subscriber to the backlog's topic: how many messages it got
/// so far (mosquitto runs with `max_queued_messages 0`, so it drops none
/// to a slow subscriber).
async fn subscriber(port: u16, id: &str) -> Arc<AtomicU64> {
    let (client, mut el) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 1024);
    client
        .subscribe("site/gw1/dev/n", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready);
    tokio::spawn(async move {
        let _keep = client;
        while let Ok(e) = el.poll().await {
            match e {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(_)) => {
                    g.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    });
    let _ = subscribed.await;
    got
}

/// Waits until `got` reaches `n` (or 60 s); the count it reached.
async fn delivered(got: &AtomicU64, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.load(Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    got.load(Relaxed)
}

/// A plain rumqttc v5 QoS 1 publisher of the backlog's messages, with
/// the same window.
async fn plain_v5(port: u16, inflight: u16) -> Duration {
    let mut o = MqttOptions::new("bench-plain-v5", "127.0.0.1", port);
    o.set_outgoing_inflight_upper_limit(inflight);
    let (client, mut el) = AsyncClient::new(o, 1024);
    let payload = msg(0).payload;
    let t = Instant::now();
    tokio::spawn(async move {
        for _ in 0..BACKLOG {
            client
                .publish_bytes("site/gw1/dev/n", QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish");
        }
        std::future::pending::<()>().await;
    });
    let mut acks = 0;
    while acks < BACKLOG {
        if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("poll") {
            acks += 1;
        }
    }
    t.elapsed()
}

/// The bridge's drain of a fresh backlog through a counting relay into
/// `mosq`: the time from the first send, the deliveries at a subscriber,
/// and the bytes each way per message.
async fn bridge_run(mosq: &Mosquitto, id: &str) -> (Duration, u64, f64, f64) {
    let got = subscriber(mosq.1, id).await;
    let (port, counted) = relay(mosq.1).await;
    let d = backlog().await;
    let (_, draining) = bridge_drain_with(d.path(), uplink_with(port, "protocol: 5\n")).await;
    let n = delivered(&got, BACKLOG as u64).await;
    let per = |c: &AtomicU64| c.load(Relaxed) as f64 / BACKLOG as f64;
    (draining, n, per(&counted.up), per(&counted.down))
}

/// The bridge at protocol 5 and the plain v5 publisher into a fresh
/// mosquitto with `conf`: one printed row; the bridge's bytes per
/// reading each way and its deliveries.
async fn drain_pair(conf: &str, label: &str) -> (f64, f64, u64) {
    let r = |t: Duration| BACKLOG as f64 / t.as_secs_f64();
    let mosq = Mosquitto::start_with(conf);
    let (bridge, bridge_got, up, down) = bridge_run(&mosq, "count-bridge").await;
    let got = subscriber(mosq.1, "count-plain").await;
    let inflight = uplink_with(mosq.1, "").inflight;
    let plain = plain_v5(mosq.1, inflight).await;
    let plain_got = delivered(&got, BACKLOG as u64).await;
    println!("  {label}:");
    println!(
        "    bridge, protocol 5, from first send: {:>8.0} msg/s ({bridge_got} delivered)",
        r(bridge)
    );
    println!(
        "    plain rumqttc v5 publisher         : {:>8.0} msg/s ({plain_got} delivered)",
        r(plain)
    );
    println!("    ratio: {:.2} (target >= 0.95)", r(bridge) / r(plain));
    (up, down, bridge_got)
}

pub async fn run() {
    println!(
        "MQTT 5 uplink: drain of a {BACKLOG}-message backlog into mosquitto (QoS 1, uplink.inflight \
         and the plain publisher's window 1000)"
    );
    let (up, down, bridge_got) = drain_pair(
        "max_queued_messages 0\n",
        "mosquitto's Receive Maximum 20 (its default max_inflight_messages)",
    )
    .await;
    drain_pair(
        "max_queued_messages 0\nmax_inflight_messages 0\n",
        "no Receive Maximum (max_inflight_messages 0): the window of 1000",
    )
    .await;
    let no_alias = Mosquitto::start_with("max_queued_messages 0\nmax_topic_alias 0\n");
    let (_, plain_topics_got, up_plain, down_plain) = bridge_run(&no_alias, "count-noalias").await;
    println!("  bytes on the wire per forwarded reading (topic site/gw1/dev/n, 100-byte payload):");
    println!("    with topic aliases   : {up:>6.1} up, {down:>5.1} down ({bridge_got} delivered)");
    println!(
        "    without (max_topic_alias 0): {up_plain:>6.1} up, {down_plain:>5.1} down ({plain_topics_got} delivered)"
    );
    println!(
        "    ratio up: {:.3} ({:.1} bytes saved per reading)\n",
        up / up_plain,
        up_plain - up
    );
}
