//! No silent loss: 200,000 QoS 0 messages from one `mosquitto_pub -l` to
//! one `mosquitto_sub` all arrive, in order (MQTT-4.6.0-6: a topic is
//! ordered). QoS 0 may be lost on a broken connection (MQTT-4.3.1), never
//! on a healthy one that merely reads slower than the publisher writes.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::abuse::HEAVY;
use super::{Client, local_args, mosquitto_spawn, mosquitto_wait, opts, yaml};
use crate::support::Gateway;

const N: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_lines_all_reach_mosquitto_sub() {
    let _turn = HEAVY.lock().await;
    let gw = Gateway::start(&yaml(""));
    let port = gw.port.to_string();
    let mut sub = mosquitto_spawn(
        "mosquitto_sub",
        &local_args(&port, &["-q", "0", "-v", "-t", "load/#"]),
    );
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    // mosquitto_sub has subscribed once it prints a probe
    let mut probe = Client::connect(opts("load-probe", gw.port)).await;
    let mut ready = false;
    for _ in 0..100 {
        probe
            .publish_acked("load/probe", QoS::AtLeastOnce, false, "p")
            .await;
        if let Ok(l) = tokio::time::timeout(Duration::from_millis(100), lines.next_line()).await {
            let l = l.expect("read mosquitto_sub").expect("mosquitto_sub ended");
            assert_eq!(l, "load/probe p");
            ready = true;
            break;
        }
    }
    assert!(ready, "mosquitto_sub never received a probe");

    let mut publisher = tokio::process::Command::new("mosquitto_pub")
        .args(local_args(&port, &["-q", "0", "-t", "load/lines", "-l"]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mosquitto_pub");
    let mut stdin = publisher.stdin.take().expect("stdin");
    let feed = tokio::spawn(async move {
        let mut text = String::with_capacity(N * 7);
        for i in 0..N {
            text.push_str(&format!("{i}\n"));
        }
        stdin
            .write_all(text.as_bytes())
            .await
            .expect("feed mosquitto_pub");
        // EOF: mosquitto_pub sends what it read, then disconnects
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut next = 0usize;
    while next < N {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                let Some(n) = l.strip_prefix("load/lines ") else {
                    continue; // a late probe
                };
                assert_eq!(n, next.to_string(), "message {next}: lost or out of order");
                next += 1;
            }
            Ok(other) => panic!("mosquitto_sub ended after {next} messages: {other:?}"),
            Err(_) => panic!("only {next} of {N} messages arrived within 120s"),
        }
    }
    feed.await.expect("feeder");
    let (ok, _, err) = mosquitto_wait(publisher, Duration::from_secs(30)).await;
    assert!(ok, "mosquitto_pub failed: {err}");
}
