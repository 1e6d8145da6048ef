//! The walking skeleton end to end: simulated devices through the default
//! mapping to the embedded broker, seen by a real MQTT client.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::support::{Gateway, Sub, options};

const SECS: Duration = Duration::from_secs(10);

const SIM: &str = r#"
gateway:
  id: gw-sk
  data_dir: "{data_dir}"
broker:
  listen: "127.0.0.1:{port}"
devices:
  - name: tank
    kind: simulated
    poll: 200ms
    points:
      - { name: level, signal: sine, period: 10s, min: 0, max: 100, unit: "%" }
      - { name: count, signal: counter, start: 7, step: 2 }
      - { name: mode, signal: constant, value: auto }
"#;

#[tokio::test]
async fn readings_arrive_as_json_at_the_poll_rate() {
    let gw = Gateway::start(SIM);
    let mut sub = Sub::connect(gw.port, &["gw-sk/#"], QoS::AtLeastOnce).await;

    let status = sub.wait_topic("gw-sk/status", SECS).await;
    assert_eq!(status.text(), "online");
    // it was published (the first subscriber may have seen it live): a
    // subscriber that comes later gets it retained
    let mut late = Sub::connect(gw.port, &["gw-sk/status"], QoS::AtLeastOnce).await;
    let status = late.next(SECS).await;
    assert_eq!(status.text(), "online");
    assert!(status.retain, "gateway status must be retained");
    let dev = sub.wait_topic("gw-sk/status/tank", SECS).await;
    assert_eq!(dev.json()["state"], "online");

    let level = sub.wait_topic("gw-sk/tank/level", SECS).await.json();
    let v = level["value"].as_f64().expect("level is a number");
    assert!((0.0..=100.0).contains(&v), "{level}");
    assert_eq!(level["unit"], "%");
    assert_eq!(level["quality"], "good");
    assert!(level["ts"].as_i64().expect("ts") > 1_700_000_000_000);

    let mode = sub.wait_topic("gw-sk/tank/mode", SECS).await.json();
    assert_eq!(mode["value"], "auto");
    assert!(mode.get("unit").is_none(), "no unit configured: {mode}");

    // five consecutive counter readings: +2 each, ~200 ms apart by their timestamps
    let mut counts = Vec::new();
    while counts.len() < 5 {
        let m = sub.wait_topic("gw-sk/tank/count", SECS).await.json();
        counts.push((
            m["value"].as_i64().expect("integer counter"),
            m["ts"].as_i64().expect("ts"),
        ));
    }
    for w in counts.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 2, "counter steps: {counts:?}");
    }
    let (first, last) = (counts[0].1, counts[4].1);
    let avg = (last - first) / 4;
    assert!(
        (150..=400).contains(&avg),
        "average interval {avg} ms, want ~200: {counts:?}"
    );
    assert!(counts[0].0 >= 7 && (counts[0].0 - 7) % 2 == 0, "{counts:?}");
}

#[tokio::test]
async fn retain_and_topic_template_follow_the_rules_section() {
    let yaml = format!(
        "{SIM}rules:\n  topic: \"plant/{{device}}/{{point}}/from/{{gateway}}\"\n  qos: 0\n  retain: true\n"
    );
    let gw = Gateway::start(&yaml);
    // wait for a first reading so the retained message exists
    let mut first = Sub::connect(gw.port, &["plant/tank/mode/from/gw-sk"], QoS::AtMostOnce).await;
    first.next(SECS).await;
    // a late subscriber gets it at once, flagged retained
    let mut late = Sub::connect(gw.port, &["plant/tank/mode/from/gw-sk"], QoS::AtMostOnce).await;
    let m = late.next(SECS).await;
    assert!(m.retain, "rules.retain: true must publish retained");
    assert_eq!(m.json()["value"], "auto");
}

#[tokio::test]
async fn sigterm_publishes_offline_and_exits_zero() {
    let mut gw = Gateway::start(SIM);
    let mut sub = Sub::connect(gw.port, &["gw-sk/status"], QoS::AtLeastOnce).await;
    assert_eq!(sub.wait_topic("gw-sk/status", SECS).await.text(), "online");
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let m = sub
        .wait_for(SECS, |m| m.topic == "gw-sk/status" && m.text() == "offline")
        .await;
    assert_eq!(m.text(), "offline");
    let status = gw.wait_exit(SECS);
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log_text());
    assert!(gw.log_text().contains("fieldgate stopped"));
}

async fn try_connect(port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
    let mut o = options(&format!("auth-{}", crate::support::free_port()), port);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (_client, mut el) = AsyncClient::new(o, 10);
    let r = tokio::time::timeout(SECS, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    r.unwrap_or_else(|_| Err("timeout".into()))
}

#[tokio::test]
async fn users_configured_means_anonymous_refused() {
    let yaml = SIM.replace(
        "  listen: \"127.0.0.1:{port}\"\n",
        "  listen: \"127.0.0.1:{port}\"\n  users:\n    - { username: hmi, password_env: FG_TEST_HMI_PW }\n",
    );
    let gw = Gateway::start_with_env(&yaml, &[("FG_TEST_HMI_PW", "s3cret")]);
    assert!(
        try_connect(gw.port, None).await.is_err(),
        "anonymous must be refused"
    );
    assert!(
        try_connect(gw.port, Some(("hmi", "wrong"))).await.is_err(),
        "wrong password must be refused"
    );
    try_connect(gw.port, Some(("hmi", "s3cret")))
        .await
        .expect("right password accepted");
    assert!(
        !gw.log_text().contains("s3cret"),
        "the password must never be logged"
    );
}

#[test]
fn a_taken_broker_port_is_a_clear_error_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let cfg = crate::support::ConfigDir::new(&format!(
        "gateway:\n  id: gw\nbroker:\n  listen: \"127.0.0.1:{port}\"\n"
    ));
    let out = crate::support::fieldgate(&["run", "-c", cfg.path_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!("error: broker cannot listen on 127.0.0.1:{port}: Address already in use");
    assert!(err.contains(&want), "{err}");
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "said once: {err}"
    );
}

#[tokio::test]
async fn gateway_workers_sets_the_runtimes_threads_default_one() {
    for (workers, yaml) in [
        (1, SIM.to_string()),
        (
            3,
            SIM.replace("  id: gw-sk\n", "  id: gw-sk\n  workers: 3\n"),
        ),
    ] {
        let gw = Gateway::start(&yaml);
        // readings flow whatever the count
        let mut sub = Sub::connect(gw.port, &["gw-sk/tank/count"], QoS::AtMostOnce).await;
        sub.wait_topic("gw-sk/tank/count", SECS).await;
        // the runtime's own count, in the start line
        let log = std::fs::read_to_string(&gw.log).expect("log");
        let line = log
            .lines()
            .find(|l| l.contains("fieldgate running"))
            .expect("start line");
        assert!(line.contains(&format!("workers={workers}")), "{line}");
    }
}
