//! Bad and heavy clients (malformed input is in `malformed`): 1,000
//! clients at once, `max_connections`, `max_payload`, a subscriber that
//! never reads. After each, the gateway process is alive and a normal client
//! still publishes and receives.

use std::time::Duration;

use rumqttc::{Packet, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::raw::{self, ConnectOutcome};
use super::{Client, SECS, opts, yaml};
use crate::support::{Gateway, Sub};

/// Heavy tests (floods, many clients) take turns: on a small machine they
/// would otherwise starve each other's gateways into client-side timeouts.
pub(super) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The gateway is alive and routes a message from a new publisher to a new subscriber.
pub(super) async fn still_serving(gw: &mut Gateway, tag: &str) {
    assert!(
        gw.child.try_wait().expect("try_wait").is_none(),
        "the gateway exited; log:\n{}",
        gw.log_text()
    );
    let topic = format!("ok/{tag}");
    // a listener being replaced after a panic refuses for a moment: wait
    // until it answers CONNACK, then use real clients
    leave(connect_eventually(gw.port, &format!("probe-{tag}"), SECS).await).await;
    let mut sub = Sub::connect(gw.port, &[&topic], QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(opts(&format!("ok-pub-{tag}"), gw.port)).await;
    publisher
        .client
        .publish(&topic, QoS::AtLeastOnce, false, "alive")
        .await
        .expect("queue publish");
    publisher
        .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
        .await;
    assert_eq!(sub.wait_topic(&topic, SECS).await.text(), "alive");
}

/// Sends DISCONNECT on a raw connection and waits until the broker closes
/// it: its connection slot is free again then (a socket merely dropped is
/// freed whenever the broker notices, which can be after the next connect).
pub(super) async fn leave(mut s: TcpStream) {
    s.write_all(&raw::DISCONNECT).await.expect("disconnect");
    assert!(
        raw::closed_within(&mut s, SECS).await,
        "not closed after DISCONNECT"
    );
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

pub(super) fn connected(id: &str) -> Vec<u8> {
    raw::connect(id, true, 30, None, None)
}

/// Connects like a real client would: retry (every 50 ms) until CONNACK 0 or `within`.
async fn connect_eventually(port: u16, id: &str, within: Duration) -> TcpStream {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (s, outcome) = raw::connect_raw(port, &connected(id)).await;
        if matches!(outcome, ConnectOutcome::ConnAck { code: 0, .. }) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} could not connect within {within:?}: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clients resetting right after CONNECT leave the broker serving; a
/// reused client id connects.
#[tokio::test]
async fn a_client_resetting_right_after_connect_does_not_kill_the_listener() {
    let mut gw = Gateway::start(&yaml(""));
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        // linger 0: closing sends RST instead of FIN
        sock.set_zero_linger().expect("linger 0");
        // refused while the gateway replaces a poisoned listener: that is
        // the recovery under test, so try the next round
        let Ok(mut s) = sock.connect(([127, 0, 0, 1], gw.port).into()).await else {
            continue;
        };
        s.write_all(&connected("reset-victim"))
            .await
            .expect("write");
        drop(s);
    }
    connect_eventually(gw.port, "after-reset", SECS).await;
    still_serving(&mut gw, "after-reset").await;
    let log = gw.log_text();
    if log.contains("broker connection task panicked") {
        assert!(
            log.contains("restarting the listener"),
            "a poisoning panic without a listener restart:\n{log}"
        );
    }
}

/// A client refused because the broker is full (CONNACK 3, §3.2.2.3)
/// connects with the same client id once a slot frees.
#[tokio::test]
async fn a_client_refused_when_full_can_retry_with_the_same_id() {
    let mut gw = Gateway::start(&yaml("max_connections: 2"));
    let mut held = Vec::new();
    loop {
        let (s, o) = raw::connect_raw(gw.port, &connected(&format!("full-{}", held.len()))).await;
        if !matches!(o, ConnectOutcome::ConnAck { code: 0, .. }) {
            break;
        }
        held.push(s);
        assert!(held.len() <= 2, "never full");
    }
    let (_s, o) = raw::connect_raw(gw.port, &connected("retrier")).await;
    assert_eq!(
        o,
        ConnectOutcome::connack(3),
        "refused while full: server unavailable"
    );
    leave(held.pop().expect("a held client")).await;
    drop(held);
    leave(connect_eventually(gw.port, "retrier", SECS).await).await;
    leave(connect_eventually(gw.port, "someone-else", SECS).await).await;
    still_serving(&mut gw, "after-full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_connect_at_once() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml("max_connections: 1100"));
    let port = gw.port;
    let mut tasks = JoinSet::new();
    for i in 0..1000 {
        tasks.spawn(async move { raw::connect_raw(port, &connected(&format!("many-{i}"))).await });
    }
    let mut streams = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (s, outcome) = r.expect("client task");
        assert_eq!(outcome, ConnectOutcome::connack(0));
        streams.push(s);
    }
    assert_eq!(streams.len(), 1000);
    still_serving(&mut gw, "after-thousand").await;
}

/// §3.2.2.3: over `max_connections` a client gets CONNACK 3, then the
/// close (MQTT-3.2.2-5).
#[tokio::test]
async fn max_connections_refuses_clients_over_the_limit() {
    let mut gw = Gateway::start(&yaml("max_connections: 5"));
    let limit = 5;
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..=limit {
        let (s, outcome) = raw::connect_raw(gw.port, &connected(&format!("lim-{i}"))).await;
        match outcome {
            ConnectOutcome::ConnAck { code: 0, .. } => held.push(s),
            other => {
                refused = Some((i, other));
                break;
            }
        }
    }
    let (at, how) = refused.expect("no client was refused");
    assert_eq!(
        how,
        ConnectOutcome::connack(3),
        "over max_connections: CONNACK 3 (server unavailable)"
    );
    assert_eq!(
        at, limit,
        "refused client number {at}: in-process subscribers use no slot"
    );
    // a slot frees when a client leaves
    leave(held.pop().expect("a held client")).await;
    let (_s, outcome) = raw::connect_raw(gw.port, &connected("lim-again")).await;
    assert!(
        matches!(outcome, ConnectOutcome::ConnAck { code: 0, .. }),
        "{outcome:?}"
    );
    drop(held);
    still_serving(&mut gw, "after-limit").await;
}

#[tokio::test]
async fn max_payload_drops_the_oversized_publisher_only() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml("max_payload: 1KiB"));
    let mut sub = Sub::connect(gw.port, &["big/#"], QoS::AtLeastOnce).await;
    let mut big = Client::connect(opts("big-pub", gw.port)).await;
    big.client
        .publish("big/x", QoS::AtLeastOnce, false, vec![b'x'; 4096])
        .await
        .expect("queue publish");
    big.wait_closed(SECS).await;
    // a publish that declares 200 MB is cut off at the header
    let mut huge = connected("big-huge");
    huge.extend_from_slice(&[0x30, 0x80, 0xDA, 0xC4, 0x5F, 0x00, 0x01, b'a']);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    s.write_all(&huge).await.expect("write");
    assert!(
        raw::closed_within(&mut s, SECS).await,
        "oversized header not refused"
    );

    let mut small = Client::connect(opts("small-pub", gw.port)).await;
    small
        .client
        .publish("big/y", QoS::AtLeastOnce, false, vec![b'y'; 512])
        .await
        .expect("queue publish");
    small
        .wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
        .await;
    let m = sub.next(SECS).await;
    assert_eq!((m.topic.as_str(), m.payload.len()), ("big/y", 512));
    still_serving(&mut gw, "after-payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_grow_memory() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml(""));
    let pid = gw.child.id();
    // two stuck subscribers (QoS 0 and QoS 1) with small receive buffers
    let mut stuck = Vec::new();
    for (i, q) in [0u8, 1].into_iter().enumerate() {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock
            .connect(([127, 0, 0, 1], gw.port).into())
            .await
            .expect("connect");
        s.write_all(&connected(&format!("stuck-{i}")))
            .await
            .expect("connect");
        s.write_all(&raw::subscribe(1, "flood/#", q))
            .await
            .expect("subscribe");
        stuck.push(s);
    }
    let mut live = Sub::connect(gw.port, &["flood/end"], QoS::AtLeastOnce).await;
    let before = rss(pid);

    const N: usize = 60_000;
    let payload = vec![b'f'; 1024];
    let mut publisher = Client::connect(opts("flood-pub", gw.port)).await;
    for i in 0..N {
        publisher
            .client
            .publish(
                format!("flood/{}", i % 10),
                QoS::AtMostOnce,
                false,
                payload.clone(),
            )
            .await
            .expect("queue publish");
    }
    publisher
        .client
        .publish("flood/end", QoS::AtLeastOnce, false, "end")
        .await
        .expect("queue publish");
    publisher
        .wait_incoming(Duration::from_secs(60), |p| matches!(p, Packet::PubAck(_)))
        .await;
    live.wait_topic("flood/end", Duration::from_secs(30)).await;
    let after = rss(pid);
    let grown = after.saturating_sub(before);
    eprintln!(
        "slow subscriber: RSS {} KiB -> {} KiB after {} MiB published",
        before / 1024,
        after / 1024,
        N / 1024
    );
    assert!(
        grown < 24 * 1024 * 1024,
        "RSS grew by {} KiB while {} MiB went to subscribers that never read",
        grown / 1024,
        N / 1024
    );
    drop(stuck);
    still_serving(&mut gw, "after-flood").await;
}

/// A QoS 1 subscriber that never acknowledges gets at most the in-flight
/// window of unacknowledged messages; the broker keeps serving others.
#[tokio::test]
async fn a_subscriber_that_never_acks_gets_a_bounded_in_flight_window() {
    let mut gw = Gateway::start(&yaml(""));
    let (mut s, outcome) = raw::connect_raw(gw.port, &connected("no-acks")).await;
    assert!(matches!(outcome, ConnectOutcome::ConnAck { code: 0, .. }));
    s.write_all(&raw::subscribe(1, "inflight/#", 1))
        .await
        .expect("subscribe");
    let mut live = Sub::connect(gw.port, &["inflight/#"], QoS::AtLeastOnce).await;
    let publisher = Client::connect(opts("inflight-pub", gw.port)).await;
    for i in 0..300 {
        publisher
            .client
            .publish(format!("inflight/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .expect("queue publish");
    }
    // the acknowledging subscriber gets all 300
    for _ in 0..300 {
        live.next(SECS).await;
    }
    // the silent one: count PUBLISHes until the broker stops sending
    let mut unacked = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), raw::read_packet(&mut s)).await {
            Ok(Some((first, _))) if first & 0xF0 == 0x30 => unacked += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    eprintln!("unacknowledged QoS 1 publishes sent: {unacked}");
    assert!(
        (1..=100).contains(&unacked),
        "{unacked} unacknowledged publishes in flight (window 100)"
    );
    still_serving(&mut gw, "after-inflight").await;
}
