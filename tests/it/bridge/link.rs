//! The upstream client's connection: its keep-alive (an idle uplink sends
//! PINGREQ so a real mosquitto keeps it, MQTT-3.1.2-23; a broker that stops
//! answering is left and reconnected to, §3.1.2.10: no PINGRESP within a
//! reasonable time, the client closes the connection) and its login
//! (a user name and password mosquitto checks; a refusal is logged with the
//! CONNACK's reason, never with the password).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::bridge::SECS;
use crate::support::{Gateway, Sub, options};
use crate::upstream::{Mosquitto, gateway_yaml_from, on_own_thread};

/// A gateway whose uplink (keep-alive 1 s) forwards nothing but its status.
fn idle_uplink(url: &str) -> String {
    let yaml = gateway_yaml_from(url, "1s", 0, "gw1/nothing/#", "");
    assert!(yaml.contains("keep_alive: 5s"), "{yaml}");
    yaml.replace("keep_alive: 5s", "keep_alive: 1s")
}

#[tokio::test]
async fn an_idle_uplink_keeps_its_connection_with_pingreq() {
    let broker = Mosquitto::start_with("log_type all\n");
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&idle_uplink(&url));
    gw.wait_log("uplink connected", SECS);
    // mosquitto drops a client silent for 1.5 x its keep-alive: three
    // PINGREQs a second apart span two such limits
    let log = broker.dir.path().join("mosquitto.log");
    let deadline = Instant::now() + SECS;
    let pings = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let pings = text.matches("Received PINGREQ from gw1-test").count();
        if pings >= 3 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "{pings} PINGREQ in 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!pings.contains("exceeded timeout"), "{pings}");
    let text = gw.log_text();
    assert_eq!(text.matches("uplink connected").count(), 1, "{text}");
    assert!(gw.terminate(SECS).success());
}

/// A broker that accepts CONNECT and then never answers anything.
fn silent_broker() -> (u16, Arc<AtomicUsize>, tokio::sync::oneshot::Sender<()>) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let port = std_listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let stop = on_own_thread(async move {
        let listener = TcpListener::from_std(std_listener).expect("listener");
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // the CONNECT (small: one read), then CONNACK accepted
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
                while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    (port, connections, stop)
}

#[tokio::test]
async fn a_broker_that_stops_answering_is_left_after_the_keep_alive() {
    let (port, connections, _stop) = silent_broker();
    let mut gw = Gateway::start(&idle_uplink(&format!("mqtt://127.0.0.1:{port}")));
    let t = Instant::now();
    gw.wait_log("uplink connected", SECS);
    // PINGREQ after 1 s of silence, no PINGRESP within another second
    gw.wait_log("no PINGRESP within the keep-alive", SECS);
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(1), "left after {took:?}");
    let deadline = Instant::now() + SECS;
    while connections.load(SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "no reconnect:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.terminate(SECS).success());
}

/// A mosquitto that takes only `gw`, password `s3cret-pw`.
fn mosquitto_with_login() -> (Mosquitto, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("passwd");
    let out = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args(["gw", "s3cret-pw"])
        .output()
        .expect("mosquitto_passwd");
    assert!(out.status.success(), "{out:?}");
    let conf = format!("allow_anonymous false\npassword_file {}\n", file.display());
    (Mosquitto::start_with(&conf), dir)
}

#[tokio::test]
async fn the_uplink_logs_in_and_a_wrong_password_is_refused_without_logging_it() {
    let (broker, _passwd) = mosquitto_with_login();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let login = "  username: gw\n  password_env: FG_TEST_UPLINK_PW";
    let yaml = gateway_yaml_from(&url, "50ms", 0, "gw1/dev/#", login);
    let mut up = Sub::connect_with(
        {
            let mut o = options("checker", broker.port);
            o.set_credentials("gw", "s3cret-pw");
            o
        },
        &["site/gw1/dev/#"],
        rumqttc::QoS::AtLeastOnce,
    )
    .await;
    let mut gw = Gateway::start_with_env(&yaml, &[("FG_TEST_UPLINK_PW", "s3cret-pw")]);
    up.wait_topic("site/gw1/dev/n", SECS).await;
    assert!(gw.terminate(SECS).success());

    let mut gw = Gateway::start_with_env(&yaml, &[("FG_TEST_UPLINK_PW", "wrong-pw")]);
    let log = gw.wait_log("the broker refused the connection", SECS);
    assert!(
        log.contains("NotAuthorized") || log.contains("BadUserNamePassword"),
        "{log}"
    );
    assert!(!log.contains("wrong-pw"), "the password was logged:\n{log}");
    assert!(!log.contains("uplink connected"), "{log}");
    assert!(gw.terminate(SECS).success());
}
