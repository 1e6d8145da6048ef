//! Rule scripts with the real binary: errors and runaway loops are logged
//! with file and line while the gateway keeps publishing, SIGHUP reloads,
//! `fieldgate rules test` and `fieldgate check` on scripts.

use std::time::Duration;

use nix::sys::signal::Signal;
use rumqttc::QoS;

use crate::support::{ConfigDir, Gateway, Sub, fieldgate, fill, free_port};

const SECS: Duration = Duration::from_secs(10);

/// A gateway with one simulated device `dev` (points `count`, a counter,
/// and `bad`, a constant 0) and the script `s.rhai` beside its config.
fn start(script: &str) -> Gateway {
    let yaml = r#"
gateway:
  id: gw-r
  data_dir: "{data_dir}"
broker:
  listen: "127.0.0.1:{port}"
devices:
  - name: dev
    kind: simulated
    poll: 100ms
    points:
      - { name: count, signal: counter }
      - { name: bad, signal: constant, value: 0 }
rules:
  scripts: [s.rhai]
"#;
    let port = free_port();
    let cfg = ConfigDir::new("");
    let data = cfg.dir.path().join("data");
    cfg.write("fieldgate.yaml", &fill(yaml, port, &data));
    cfg.write("s.rhai", script);
    Gateway::spawn(cfg, port, &[])
}

/// The counter value of the next message on `topic`.
async fn next_count(sub: &mut Sub, topic: &str) -> i64 {
    let m = sub.wait_topic(topic, SECS).await;
    m.json()["value"].as_i64().expect("integer count")
}

#[tokio::test]
async fn a_script_error_is_logged_with_file_and_line_and_publishing_goes_on() {
    let script = "fn on_reading(r) {\n  if r.point == \"bad\" {\n    let x = 10 / r.value;\n  }\n  emit(r);\n}\n";
    let gw = start(script);
    let mut sub = Sub::connect(gw.port, &["gw-r/dev/#"], QoS::AtMostOnce).await;
    let log = gw.wait_log("rule script error", SECS);
    let line = log
        .lines()
        .find(|l| l.contains("rule script error"))
        .expect("error line");
    assert!(line.contains("s.rhai:3:"), "file:line:column in {line}");
    assert!(line.contains("Division by zero"), "{line}");
    assert!(line.contains("dev/bad=0"), "the reading in {line}");
    // the failing reading is not published, the others keep coming
    let a = next_count(&mut sub, "gw-r/dev/count").await;
    let b = next_count(&mut sub, "gw-r/dev/count").await;
    assert!(b > a, "{a} then {b}");
    assert!(
        sub.seen.iter().all(|m| m.topic != "gw-r/dev/bad"),
        "a failed call publishes nothing"
    );
}

#[tokio::test]
async fn a_runaway_loop_is_stopped_and_readings_keep_flowing() {
    let script =
        "fn on_reading(r) {\n  if r.point == \"bad\" {\n    loop { }\n  }\n  emit(r);\n}\n";
    let gw = start(script);
    let mut sub = Sub::connect(gw.port, &["gw-r/dev/count"], QoS::AtMostOnce).await;
    gw.wait_log("too many operations", SECS);
    // after several stopped loops, counts still arrive at the poll rate
    let first = next_count(&mut sub, "gw-r/dev/count").await;
    let mut last = first;
    for _ in 0..5 {
        last = next_count(&mut sub, "gw-r/dev/count").await;
    }
    assert_eq!(last - first, 5, "one count per poll, none lost");
    let log = gw.log_text();
    assert!(log.contains("s.rhai"), "{log}");
}

#[tokio::test]
async fn sighup_reloads_a_good_script_and_keeps_the_old_one_when_broken() {
    let v =
        |tag: &str| format!("fn on_reading(r) {{\n  r.topic = \"ver/{tag}\";\n  emit(r);\n}}\n");
    let gw = start(&v("one"));
    let mut sub = Sub::connect(gw.port, &["ver/#"], QoS::AtMostOnce).await;
    sub.wait_topic("ver/one", SECS).await;

    gw.cfg.write("s.rhai", &v("two"));
    gw.signal(Signal::SIGHUP);
    sub.wait_topic("ver/two", SECS).await;
    gw.wait_log("rule script reloaded", SECS);

    gw.cfg.write("s.rhai", "fn on_reading(r) {\n  emit(r\n}\n");
    gw.signal(Signal::SIGHUP);
    let log = gw.wait_log("not reloaded", SECS);
    let line = log
        .lines()
        .find(|l| l.contains("not reloaded"))
        .expect("line");
    assert!(line.contains("s.rhai:3:"), "{line}");
    // the previous version keeps running: only ver/two from here on
    sub.seen.clear();
    for _ in 0..4 {
        let m = sub.next(SECS).await;
        assert_eq!(m.topic, "ver/two");
    }
    assert!(gw.child.id() > 0);
}

fn output(args: &[&str]) -> (Option<i32>, String, String) {
    let out = fieldgate(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CLI_YAML: &str = "gateway:\n  id: gw\nrules:\n  scripts:\n    - scripts/s.rhai\n";

#[test]
fn rules_test_shows_what_would_be_published() {
    let cfg = ConfigDir::new(CLI_YAML);
    cfg.write(
        "scripts/s.rhai",
        "fn on_reading(r) {\n  if deadband(r, 1) {\n    publish(`alarm/${r.point}`, #{v: r.value}, 2, true);\n    emit(r);\n  }\n}\n",
    );
    let (code, out, err) = output(&[
        "rules",
        "test",
        "-c",
        cfg.path_str(),
        "-r",
        "boiler/temp=21.5 °C",
        "-r",
        "boiler/temp=21.7",
        "-r",
        "boiler/mode=auto",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("reading boiler/temp=21.5 °C"), "{out}");
    assert_eq!(
        lines[1], "  publish alarm/temp qos=2 retain=true {\"v\":21.5}",
        "{out}"
    );
    assert!(
        lines[2].starts_with(
            "  publish gw/boiler/temp qos=1 retain=false {\"value\":21.5,\"unit\":\"°C\""
        ),
        "{out}"
    );
    assert!(lines[3].starts_with("reading boiler/temp=21.7"), "{out}");
    assert_eq!(
        lines[4], "  (nothing published)",
        "within the deadband: {out}"
    );
    assert!(lines[5].starts_with("reading boiler/mode=auto"), "{out}");
    assert!(lines[7].contains("{\"value\":\"auto\""), "{out}");
}

#[test]
fn rules_test_reports_a_script_error_and_exits_1() {
    let cfg = ConfigDir::new(CLI_YAML);
    cfg.write(
        "scripts/s.rhai",
        "fn on_reading(r) {\n\n  r.value.nope();\n}\n",
    );
    let (code, out, err) = output(&["rules", "test", "-c", cfg.path_str(), "-r", "d/p=1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("error") && out.contains("s.rhai:3:"), "{out}");
}

#[test]
fn check_on_a_broken_script_exits_78_with_file_and_line() {
    let cfg = ConfigDir::new(CLI_YAML);
    cfg.write("scripts/s.rhai", "fn on_reading(r) {\n  let x = ;\n}\n");
    let (code, out, err) = output(&["check", "-c", cfg.path_str()]);
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(
        err.contains("rules.scripts[0] (line 5"),
        "YAML path and line: {err}"
    );
    assert!(
        err.contains("scripts/s.rhai:2:"),
        "script file and line: {err}"
    );

    // a script without on_reading, and a missing file
    cfg.write("scripts/s.rhai", "fn something_else(r) { }\n");
    let (code, _, err) = output(&["check", "-c", cfg.path_str()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("fn on_reading"), "{err}");
    std::fs::remove_file(cfg.dir.path().join("scripts/s.rhai")).expect("rm");
    let (code, _, err) = output(&["check", "-c", cfg.path_str()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("cannot read script"), "{err}");

    // fixed: check passes and lists the script
    cfg.write("scripts/s.rhai", "fn on_reading(r) { emit(r); }\n");
    let (code, out, err) = output(&["check", "-c", cfg.path_str()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("scripts/s.rhai (fn on_reading"), "{out}");
}

#[test]
fn the_example_config_and_plugins_check_and_run() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/rules.yaml");
    let (code, out, err) = output(&["check", "-c", cfg]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = output(&[
        "rules",
        "test",
        "-c",
        cfg,
        "-r",
        "boiler/pressure=1.2 bar",
        "-r",
        "meter/voltage=230",
        "-r",
        "meter/current=2",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "publish plant/boiler/pressure qos=1 retain=false {\"value\":120.0,\"unit\":\"kPa\""
        ),
        "{out}"
    );
    assert!(
        out.contains("publish demo-gw/meter/power qos=1 retain=false {\"value\":460"),
        "{out}"
    );
}
