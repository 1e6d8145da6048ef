//! Attacks on the broker's limits, each from raw sockets as a hostile or
//! broken client would make it (issue: "no client can take the gateway
//! down"). Each asserts what an operator would check: the gateway's RSS
//! (from /proc) stays within a stated bound, another client keeps getting
//! its QoS 1 round trip within a second while the attack runs, and the
//! process is alive afterwards.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::abuse::{HEAVY, connected, still_serving};
use super::raw::{self, ConnectOutcome, Raw};
use super::{SECS, yaml};
use crate::support::Gateway;

const MIB: u64 = 1024 * 1024;

/// Resident memory of the gateway, in bytes.
fn rss(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

/// A client that keeps doing QoS 1 round trips (PUBLISH, its PUBACK and
/// the message back through its own subscription) until stopped; returns
/// how many it made and the slowest.
struct Probe {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(u32, Duration)>,
}

impl Probe {
    async fn start(port: u16, tag: &str) -> Probe {
        let mut c = Raw::connect(port, &format!("probe-{tag}")).await;
        let topic = format!("probe/{tag}");
        assert_eq!(c.subscribe(1, &topic, 1).await, 1);
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let (mut trips, mut slowest) = (0u32, Duration::ZERO);
            let mut pkid = 1u16;
            while !until.is_cancelled() {
                pkid = pkid % 60_000 + 1;
                let started = tokio::time::Instant::now();
                c.send(&raw::publish(&topic, b"rt", 1, false, pkid)).await;
                let (mut acked, mut echoed) = (false, false);
                while !(acked && echoed) {
                    let (first, body) = c
                        .next(Duration::from_secs(5))
                        .await
                        .expect("probe connection closed");
                    if first == raw::PUBACK {
                        acked = true;
                    } else if let Some(p) = raw::Publish::parse(first, &body) {
                        echoed = true;
                        if let Some(id) = p.pkid {
                            c.send(&raw::ack(raw::PUBACK, id)).await;
                        }
                    }
                }
                slowest = slowest.max(started.elapsed());
                trips += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (trips, slowest)
        });
        Probe { stop, task }
    }

    /// Stops it and asserts every round trip took under a second.
    async fn finish(self, what: &str) {
        self.stop.cancel();
        let (trips, slowest) = self.task.await.expect("probe task");
        assert!(trips > 0, "{what}: no round trip at all");
        assert!(
            slowest < Duration::from_secs(1),
            "{what}: a QoS 1 round trip took {slowest:?} ({trips} trips)"
        );
    }
}

/// A client that sends PINGREQ without end and never reads its socket is
/// disconnected once it owes `max_client_buffer`; memory stays bounded
/// (before: 137 MiB of PINGREQ raised RSS by 2 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml(""));
    let probe = Probe::start(gw.port, "noread").await;
    let before = rss(&gw);
    let (mut s, outcome) = raw::connect_raw(gw.port, &connected("never-reads")).await;
    assert_eq!(outcome, ConnectOutcome::connack(0));
    let flood = raw::PINGREQ.repeat(32 * 1024); // 64 KiB a write
    let mut sent = 0u64;
    let closed = loop {
        match tokio::time::timeout(SECS, s.write_all(&flood)).await {
            Ok(Ok(())) => sent += flood.len() as u64,
            Ok(Err(_)) => break true, // reset: the broker closed it
            Err(_) => break false,
        }
        assert!(sent < 512 * MIB, "still open after {sent} bytes of PINGREQ");
    };
    let grown = rss(&gw).saturating_sub(before);
    probe.finish("while a client floods PINGREQ").await;
    assert!(closed, "the flooding client was not disconnected");
    assert!(grown < 48 * MIB, "RSS grew by {grown} bytes");
    gw.wait_log("limit=\"max_client_buffer\"", SECS);
    still_serving(&mut gw, "after-noread").await;
}

/// Filters and topics deeper than `max_topic_levels` (200, mosquitto's)
/// close the connection before a tree node is made (before: 60 filters of
/// 32,000 levels cost 619 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_filters_are_refused_and_cost_no_memory() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml(""));
    let probe = Probe::start(gw.port, "deep").await;
    let before = rss(&gw);
    for i in 0..60 {
        let filter = format!("{i}{}", "/a".repeat(32_000));
        let mut c = Raw::connect(gw.port, &format!("deep-{i}")).await;
        c.send(&raw::subscribe(1, &filter, 0)).await;
        assert!(
            raw::closed_within(&mut c.s, SECS).await,
            "a 32,001-level filter was accepted"
        );
    }
    // 201 levels (200 separators, mosquitto's limit) are fine, 202 are not
    let mut ok = Raw::connect(gw.port, "deep-ok").await;
    let at_limit = vec!["l"; 201].join("/");
    assert_eq!(ok.subscribe(1, &at_limit, 0).await, 0);
    ok.send(&raw::publish(&format!("{at_limit}/x"), b"x", 0, false, 0))
        .await;
    assert!(
        raw::closed_within(&mut ok.s, SECS).await,
        "201 levels published"
    );
    let grown = rss(&gw).saturating_sub(before);
    probe.finish("while deep filters arrive").await;
    assert!(grown < 16 * MIB, "RSS grew by {grown} bytes");
    gw.wait_log("limit=\"max_topic_levels\"", SECS);
    still_serving(&mut gw, "after-deep").await;
}

/// A persistent session subscribing thousands of times: past
/// `max_subscriptions_per_client` each new filter gets 0x80, each
/// SUBSCRIBE stores one row (not the whole set again) and waits for the
/// store, and other clients keep their round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscribes_are_capped_and_stay_cheap() {
    let _turn = HEAVY.lock().await;
    let gw = Gateway::start(&yaml("max_subscriptions_per_client: 1000"));
    let probe = Probe::start(gw.port, "subs").await;
    let mut c = Raw::open(gw.port, &raw::connect("many-subs", false, 30, None, None))
        .await
        .0;
    let mut batch = Vec::new();
    for i in 0..3000u16 {
        batch.extend(raw::subscribe(i + 1, &format!("s/{i}/#"), 1));
    }
    c.send(&batch).await;
    let mut codes = Vec::new();
    while codes.len() < 3000 {
        let body = c.expect(raw::SUBACK, Duration::from_secs(30)).await;
        codes.push(body[2]);
    }
    probe.finish("while 3,000 SUBSCRIBEs arrive").await;
    assert!(
        codes[..1000].iter().all(|c| *c == 1),
        "the first 1,000 granted"
    );
    assert!(codes[1000..].iter().all(|c| *c == 0x80), "the rest refused");
    // a session that comes back has exactly its 1,000 subscriptions; a
    // QoS 1 message for it is acknowledged once its store commit is done,
    // and that commit holds every subscription before it
    drop(c);
    let mut marker = Raw::connect(gw.port, "subs-marker").await;
    marker
        .send(&raw::publish("s/0/m", b"marker", 1, false, 1))
        .await;
    marker.expect(raw::PUBACK, SECS).await;
    let mut gw = gw.sigkill_and_restart(&[]);
    let (mut again, present) =
        Raw::open(gw.port, &raw::connect("many-subs", false, 30, None, None)).await;
    assert!(present, "the session survived the restart");
    let mut publisher = Raw::connect(gw.port, "subs-pub").await;
    publisher
        .send(&raw::publish("s/999/x", b"kept", 1, false, 1))
        .await;
    publisher
        .send(&raw::publish("s/1000/x", b"refused", 1, false, 2))
        .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let p = again.publish_in(SECS).await;
        if let Some(id) = p.pkid {
            again.send(&raw::ack(raw::PUBACK, id)).await;
        }
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(got, ["marker", "kept"]);
    assert!(
        again
            .publishes_until_quiet(Duration::from_millis(500))
            .await
            .is_empty(),
        "a refused filter delivered"
    );
    still_serving(&mut gw, "after-subs").await;
}

/// 20,000 retained messages and one SUBSCRIBE with a thousand wildcard
/// filters: other clients' round trips stay under a second (before: 6 s
/// without any, then 4.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivery_for_a_huge_subscribe_does_not_stall_others() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml("max_retained_messages: 30000"));
    let mut p = Raw::connect(gw.port, "retainer").await;
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.extend(raw::publish(
            &format!("r/{}/{i}", i % 1000),
            b"v",
            0,
            true,
            0,
        ));
    }
    p.send(&batch).await;
    p.send(&raw::PINGREQ).await;
    p.expect(raw::PINGRESP, SECS).await;
    let probe = Probe::start(gw.port, "retained").await;
    let mut big = Raw::connect(gw.port, "big-subscribe").await;
    let filters: Vec<String> = (0..1000).map(|i| format!("r/{i}/+")).collect();
    let list: Vec<(&[u8], u8)> = filters.iter().map(|f| (f.as_bytes(), 0)).collect();
    big.send(&raw::subscribe_raw(0x82, 1, &list)).await;
    big.expect(raw::SUBACK, SECS).await;
    let mut got = 0;
    while got < 20_000 {
        let p = big.publish_in(Duration::from_secs(30)).await;
        assert!(p.retain);
        got += 1;
    }
    probe
        .finish("while 20,000 retained messages go to one SUBSCRIBE")
        .await;
    still_serving(&mut gw, "after-retained").await;
}

/// Retained messages past `max_retained_messages` are delivered but not
/// retained, and counted.
#[tokio::test]
async fn retained_messages_past_the_limit_are_delivered_but_not_kept() {
    // 4: the gateway's own retained `gw-b/status` counts too
    let mut gw = Gateway::start(&yaml("max_retained_messages: 4"));
    let mut sub = Raw::connect(gw.port, "ret-live").await;
    assert_eq!(sub.subscribe(1, "cap/#", 0).await, 0);
    let mut p = Raw::connect(gw.port, "ret-pub").await;
    for i in 0..5 {
        p.send(&raw::publish(&format!("cap/{i}"), b"v", 0, true, 0))
            .await;
    }
    for _ in 0..5 {
        sub.publish_in(SECS).await;
    }
    let mut late = Raw::connect(gw.port, "ret-late").await;
    assert_eq!(late.subscribe(1, "cap/#", 0).await, 0);
    let kept = late.publishes_until_quiet(Duration::from_millis(500)).await;
    let topics: Vec<String> = kept.iter().map(|p| p.topic.clone()).collect();
    assert_eq!(topics, ["cap/0", "cap/1", "cap/2"]);
    gw.wait_log("limit=\"max_retained\"", SECS);
    still_serving(&mut gw, "after-retained-cap").await;
}

/// Size of broker.db and its WAL.
fn store_size(gw: &Gateway) -> u64 {
    let dir = gw.cfg.dir.path().join("data");
    ["broker.db", "broker.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// An offline persistent session with a 60,000-byte client id: the spool
/// quota counts the client id stored with every row (before: 3,000
/// messages of 100 bytes grew broker.db by 360 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_client_id_cannot_fill_the_disk() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml("max_spooled_bytes: 2MiB"));
    let id = "i".repeat(60_000);
    {
        let mut c = Raw::open(gw.port, &raw::connect(&id, false, 30, None, None))
            .await
            .0;
        assert_eq!(c.subscribe(1, "sd/#", 1).await, 1);
        c.send(&raw::DISCONNECT).await;
        assert!(raw::closed_within(&mut c.s, SECS).await);
    }
    let before = store_size(&gw);
    let mut p = Raw::connect(gw.port, "sd-pub").await;
    for i in 0..3000u16 {
        p.send(&raw::publish(
            "sd/x",
            &[b'p'; 100],
            1,
            false,
            i % 60_000 + 1,
        ))
        .await;
        p.expect(raw::PUBACK, SECS).await;
    }
    let grown = store_size(&gw).saturating_sub(before);
    assert!(grown < 16 * MIB, "broker.db grew by {grown} bytes");
    gw.wait_log("limit=\"max_spooled_bytes\"", SECS);
    still_serving(&mut gw, "after-spool").await;
}

/// Sockets that never send CONNECT do not lock clients out: a client
/// connects at once among 400 of them, and they are closed after
/// `connect_timeout` (before: 330-400 such sockets locked everyone out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_lock_clients_out() {
    let _turn = HEAVY.lock().await;
    let mut gw = Gateway::start(&yaml("connect_timeout: 3s\nmax_connections: 100"));
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(
            TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .expect("connect"),
        );
    }
    // wait past the grace during which a new socket cannot displace others
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = tokio::time::Instant::now();
    let (_s, outcome) = raw::connect_raw(gw.port, &connected("among-silent")).await;
    assert_eq!(outcome, ConnectOutcome::connack(0));
    assert!(started.elapsed() < Duration::from_secs(1));
    let last = silent.last_mut().expect("a silent socket");
    assert!(
        raw::closed_within(last, Duration::from_secs(6)).await,
        "a silent socket outlived connect_timeout"
    );
    still_serving(&mut gw, "after-silent").await;
}

/// `max_sessions` refuses a new persistent session with CONNACK 3 (a clean
/// one still connects); a persistent session whose client does not come
/// back within `persistent_session_expiry` is removed.
#[tokio::test]
async fn persistent_sessions_are_capped_and_expire() {
    let mut gw = Gateway::start(&yaml("max_sessions: 2\npersistent_session_expiry: 1s"));
    let persistent = |id: &str| raw::connect(id, false, 30, None, None);
    let mut a = Raw::open(gw.port, &persistent("keep-a")).await.0;
    assert_eq!(a.subscribe(1, "exp/#", 1).await, 1);
    let _b = Raw::open(gw.port, &persistent("keep-b")).await.0;
    let (_c, outcome) = raw::connect_raw(gw.port, &persistent("keep-c")).await;
    assert_eq!(
        outcome,
        ConnectOutcome::connack(3),
        "a third persistent session"
    );
    let _clean = Raw::connect(gw.port, "clean-one").await;
    a.send(&raw::DISCONNECT).await;
    assert!(raw::closed_within(&mut a.s, SECS).await);
    gw.wait_log(
        "persistent sessions of clients that did not come back removed",
        SECS,
    );
    let (_a, present) = Raw::open(gw.port, &persistent("keep-a")).await;
    assert!(!present, "the expired session was resumed");
    still_serving(&mut gw, "after-sessions").await;
}
