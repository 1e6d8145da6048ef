//! Poison messages: a message the uplink can never carry moves to the
//! dead-letter table and the queue behind it goes on; `fieldgate check`
//! refuses a `broker.max_payload` the uplink cannot carry.

use std::time::Duration;

use rumqttc::QoS;

use crate::bridge::{SECS, publish_all};
use crate::support::{ConfigDir, Gateway, Sub, fieldgate};
use crate::upstream::Mosquitto;

/// A gateway with a 1-hour counter (quiet) and an uplink to `url` that
/// forwards `gw1/#` under `site/`; `uplink_extra` and `broker_extra` are
/// added to those sections.
fn yaml(url: &str, uplink_extra: &str, broker_extra: &str, metrics_port: u16) -> String {
    format!(
        r#"
gateway:
  id: gw1
  data_dir: "{{data_dir}}"
broker:
  listen: 127.0.0.1:{{port}}
{broker_extra}
devices:
  - name: dev
    kind: simulated
    poll: 1h
    points:
      - {{ name: n, signal: counter }}
metrics:
  listen: 127.0.0.1:{metrics_port}
uplink:
  url: {url}
  client_id: gw1-test
  keep_alive: 5s
  reconnect: {{ min: 100ms, max: 300ms }}
  forward:
    - {{ filter: "gw1/#", prefix: "site/", qos: 1 }}
{uplink_extra}
"#
    )
}

fn metric(port: u16, name: &str) -> i64 {
    let (_, text) = crate::ops::http_get(port, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Waits until the gateway counted `n` dead messages (the move is
/// committed by the outbox writer a moment after the queue went on).
async fn wait_dead(gw: &Gateway, port: u16, n: i64) {
    let deadline = tokio::time::Instant::now() + SECS;
    while metric(port, "fieldgate_uplink_dead_total") != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead count never reached {n}; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cli(cfg: &ConfigDir, args: &[&str]) -> String {
    let mut all = vec!["outbox"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-c", cfg.path_str()]);
    let out = fieldgate(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `before`, then the poison message on `poison_topic`, then `after-0..20`
/// on `gw1/hmi/small`: every small one must arrive upstream.
async fn small_ones_get_past(gw: &Gateway, up: &mut Sub, poison_topic: String, poison: Vec<u8>) {
    let mut msgs = vec![("gw1/hmi/small".to_string(), b"before".to_vec())];
    msgs.push((poison_topic, poison));
    for i in 0..20 {
        msgs.push(("gw1/hmi/small".into(), format!("after-{i}").into_bytes()));
    }
    publish_all(gw.port, "local-poison", msgs.into_iter(), SECS).await;
    let mut want: Vec<String> = vec!["before".into()];
    want.extend((0..20).map(|i| format!("after-{i}")));
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = up.try_next(left).await else {
            panic!(
                "upstream got {got:?} of {} small messages; log:\n{}",
                want.len(),
                gw.log_text()
            );
        };
        if m.topic == "site/gw1/hmi/small" && !got.contains(&m.text()) {
            got.push(m.text());
        }
    }
    // all of them; the order across the forced disconnects is not asserted:
    // rumqttc may resend a message written just before a drop ahead of one
    // written before it
    got.sort_by_key(|t| {
        t.strip_prefix("after-")
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(-1)
    });
    assert_eq!(got, want, "small messages missing");
}

#[tokio::test]
async fn a_message_the_upstream_refuses_goes_dead_and_the_queue_goes_on() {
    // mosquitto disconnects a client that sends a packet over 4 KiB, as
    // AWS IoT does for its limits
    let broker = Mosquitto::start_with("max_packet_size 4096\n");
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let mport = crate::support::free_port();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut gw = Gateway::start(&yaml(&url, "  max_attempts: 3", "", mport));
    up.wait_topic("site/gw1/status", SECS).await;
    small_ones_get_past(&gw, &mut up, "gw1/hmi/big".into(), vec![b'x'; 8 * 1024]).await;
    wait_dead(&gw, mport, 1).await;
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("dead-letter") && l.contains("site/gw1/hmi/big")),
        "no log line with the topic:\n{log}"
    );
    assert!(gw.terminate(SECS).success());

    let dead = cli(&gw.cfg, &["list", "--dead"]);
    assert!(dead.contains("site/gw1/hmi/big"), "{dead}");
    assert!(dead.contains("dropped 3 times"), "{dead}");
    assert!(cli(&gw.cfg, &["stats"]).contains("dead:     1"));
    let out = cli(&gw.cfg, &["retry-dead"]);
    assert!(out.contains("moved 1 "), "{out}");
    assert!(cli(&gw.cfg, &["list"]).contains("site/gw1/hmi/big"));
    assert!(!cli(&gw.cfg, &["list", "--dead"]).contains("site/gw1/hmi/big"));
}

#[tokio::test]
async fn a_message_over_uplink_max_packet_size_goes_dead_unsent() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let mport = crate::support::free_port();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let cfg = yaml(
        &url,
        "  max_packet_size: 4KiB",
        "  max_payload: 1KiB",
        mport,
    );
    let mut gw = Gateway::start(&cfg);
    up.wait_topic("site/gw1/status", SECS).await;
    // a payload the local broker takes, under a topic too long for 4 KiB
    let topic = format!("gw1/hmi/{}", "t".repeat(3500));
    small_ones_get_past(&gw, &mut up, topic, vec![b'y'; 1000]).await;
    wait_dead(&gw, mport, 1).await;
    assert!(gw.terminate(SECS).success());
    let dead = cli(&gw.cfg, &["list", "--dead"]);
    assert!(
        dead.contains("larger than uplink.max_packet_size"),
        "{dead}"
    );
}

#[test]
fn check_refuses_a_max_payload_the_uplink_cannot_carry() {
    let too_big = "gateway: { id: gw }\nbroker:\n  max_payload: 2MiB\nuplink:\n  url: mqtt://h\n  forward: [{ filter: \"gw/#\", qos: 1 }]\n";
    let cfg = ConfigDir::new(too_big);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("uplink.max_packet_size"), "{err}");
    let fits = too_big.replace("forward:", "max_packet_size: 4MiB\n  forward:");
    let cfg = ConfigDir::new(&fits);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_command_over_max_packet_size_is_dropped_once_not_resent_for_ever() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/status"], QoS::AtLeastOnce).await;
    let mport = crate::support::free_port();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let uplink = "  max_packet_size: 4KiB\n  commands:\n    \
                  - { filter: \"site/gw1/+/+/set\", strip_prefix: \"site/\", qos: 1 }";
    let mut gw = Gateway::start(&yaml(&url, uplink, "  max_payload: 1KiB", mport));
    let mut local = Sub::connect(gw.port, &["gw1/+/+/set"], QoS::AtLeastOnce).await;
    up.wait_topic("site/gw1/status", SECS).await;
    // the log from here on (the reconnect after the drop can follow at
    // once: the backoff's full jitter may wait next to nothing)
    let from = gw.log_text().len();
    // a command too big for the uplink's 4 KiB: the connection breaks
    let big = "x".repeat(8000);
    let out = std::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            "site/gw1/dev/n/set",
            "-m",
            &big,
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "{out:?}");
    gw.wait_log("over uplink.max_packet_size", SECS);
    // the session is cleared, so the broker does not send it again; a
    // small command published after that gets through
    let deadline = std::time::Instant::now() + SECS;
    while !gw.log_text()[from..].contains("uplink connected session_present=false") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    operator(broker.port, "42");
    let m = local.wait_topic("gw1/dev/n/set", SECS).await;
    assert_eq!(m.text(), "42");
    let dropped = gw.log_text().matches("over uplink.max_packet_size").count();
    assert_eq!(dropped, 1, "the big command came back:\n{}", gw.log_text());
    assert!(gw.terminate(SECS).success());
}

/// An operator's command upstream, from mosquitto_pub at QoS 1.
fn operator(port: u16, payload: &str) {
    let out = std::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "site/gw1/dev/n/set",
            "-m",
            payload,
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(out.status.success(), "{out:?}");
}
