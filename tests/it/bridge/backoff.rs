//! The uplink's reconnect backoff against a broker that misbehaves: one
//! that accepts every connection and drops it at once gets no reconnect
//! storm (the backoff resets only after `stable`), and a refused CONNACK
//! waits at the maximum and is logged once. (The delay distribution and
//! the reset are unit tests in `bridge/upstream/backoff.rs`.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bridge::SECS;
use crate::support::Gateway;
use crate::upstream::{gateway_yaml_from, on_own_thread};

/// A broker that answers every CONNECT with CONNACK `code` and closes the
/// connection; the times of the connections it took.
fn one_answer_broker(
    code: u8,
) -> (
    u16,
    watch::Receiver<Vec<Instant>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("addr").port();
    let (tx, rx) = watch::channel(Vec::new());
    let stop = on_own_thread(async move {
        let listener = TcpListener::from_std(std_listener).expect("listener");
        while let Ok((mut s, _)) = listener.accept().await {
            tx.send_modify(|t| t.push(Instant::now()));
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // the CONNECT (small: one read), the answer, then closed
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = s.write_all(&[0x20, 0x02, 0x00, code]).await;
                }
            });
        }
    });
    (port, rx, stop)
}

/// `gateway_yaml_from`'s gateway with `reconnect` instead of the tests' default.
fn yaml(port: u16, reconnect: &str) -> String {
    let yaml = gateway_yaml_from(
        &format!("mqtt://127.0.0.1:{port}"),
        "1s",
        0,
        "gw1/nothing/#",
        "",
    );
    let default = "reconnect: { min: 100ms, max: 500ms }";
    assert!(yaml.contains(default), "{yaml}");
    yaml.replace(default, reconnect)
}

#[tokio::test]
async fn a_broker_that_accepts_and_drops_gets_no_reconnect_storm() {
    let (port, mut tries, _stop) = one_answer_broker(0);
    let mut gw = Gateway::start(&yaml(
        port,
        "reconnect: { min: 100ms, max: 800ms, stable: 30s }",
    ));
    // the caps 100, 200, 400, 800, 800 ms ...: each wait is uniform below
    // its cap, so 16 tries take about 5 s (under 1.6 s: 4 standard
    // deviations off); reset at every connect (caps of 100 ms) they would
    // take 1.5 s at most
    tokio::time::timeout(SECS, tries.wait_for(|t| t.len() >= 16))
        .await
        .expect("16 tries within the deadline")
        .expect("broker running");
    let t = tries.borrow().clone();
    let span = t[15] - t[0];
    assert!(
        span >= Duration::from_millis(1600),
        "16 connections in {span:?}: the backoff was reset by connections that did not last"
    );
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn a_refused_connack_backs_off_at_the_maximum_and_is_logged_once() {
    // 5: not authorised
    let (port, mut tries, _stop) = one_answer_broker(5);
    let mut gw = Gateway::start(&yaml(
        port,
        "reconnect: { min: 50ms, max: 600ms, stable: 30s }",
    ));
    tokio::time::timeout(SECS, tries.wait_for(|t| t.len() >= 4))
        .await
        .expect("4 tries within the deadline")
        .expect("broker running");
    let t = tries.borrow().clone();
    // each wait between max/2 and max, from the first refusal on
    for w in t.windows(2).take(3) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(300), "retried after {gap:?}");
    }
    let log = gw.log_text();
    assert_eq!(
        log.matches("uplink connection refused;").count(),
        1,
        "the same refusal logged more than once:\n{log}"
    );
    assert!(log.contains("NotAuthorized"), "{log}");
    assert!(gw.terminate(SECS).success());
}
