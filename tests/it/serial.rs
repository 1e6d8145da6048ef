//! Serial sensors with the real binary: a `socat` pty pair stands in for the
//! sensor (the gateway opens `DIR/dev`, the test writes into `DIR/sensor`).
//! The example decoders end to end to the embedded broker, garbage and a
//! decoder that throws, unplug (socat stopped) and replug, and `check`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rumqttc::QoS;

use crate::support::{ConfigDir, Gateway, Msg, Sub, fieldgate, fill, free_port};

const SECS: Duration = Duration::from_secs(10);

/// A pty pair made by socat: `dev` for the gateway, `sensor` for the test.
struct Socat {
    child: Child,
    pub dev: PathBuf,
    pub sensor: PathBuf,
}

impl Socat {
    fn start(dir: &Path, name: &str) -> Socat {
        let dev = dir.join(format!("{name}-dev"));
        let sensor = dir.join(format!("{name}-sensor"));
        let _ = std::fs::remove_file(&dev);
        let _ = std::fs::remove_file(&sensor);
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", dev.display()))
            .arg(format!("pty,raw,echo=0,link={}", sensor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed");
        // socat makes the links once both ptys exist.
        let deadline = Instant::now() + SECS;
        while !(dev.exists() && sensor.exists()) {
            assert!(Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(10));
        }
        Socat { child, dev, sensor }
    }

    /// Writes bytes as the sensor would.
    fn send(&self, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.sensor)
            .expect("open the sensor side");
        f.write_all(bytes).expect("write to the sensor pty");
        f.flush().expect("flush");
    }

    /// Unplugs: socat exits (SIGTERM: it removes its links), the port vanishes.
    fn stop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.dev);
        let _ = std::fs::remove_file(&self.sensor);
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway whose config has `devices` (with `{dir}` = the config folder);
/// `files` are written beside the config first.
fn gateway(dir_files: &[(&str, &str)], devices: &str, socats: &[&str]) -> (Gateway, Vec<Socat>) {
    let port = free_port();
    let cfg = ConfigDir::new("");
    let dir = cfg.dir.path().to_path_buf();
    let socats: Vec<Socat> = socats.iter().map(|n| Socat::start(&dir, n)).collect();
    for (name, text) in dir_files {
        cfg.write(name, text);
    }
    let yaml = format!(
        "gateway:\n  id: gw-s\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\ndevices:\n{}",
        devices.replace("{dir}", dir.to_str().expect("utf-8 temp dir"))
    );
    let data = dir.join("data");
    cfg.write("fieldgate.yaml", &fill(&yaml, port, &data));
    (Gateway::spawn(cfg, port, &[]), socats)
}

fn plugin(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("plugins")
            .join(name),
    )
    .expect("plugin file")
}

async fn wait_state(sub: &mut Sub, device: &str, state: &str) -> Msg {
    let topic = format!("gw-s/status/{device}");
    sub.wait_for(SECS, |m| m.topic == topic && m.json()["state"] == state)
        .await
}

/// The message on `topic`: one already set aside by an earlier wait, or the next.
async fn take(sub: &mut Sub, topic: &str) -> serde_json::Value {
    if let Some(i) = sub.seen.iter().position(|m| m.topic == topic) {
        return sub.seen.remove(i).json();
    }
    sub.wait_topic(topic, SECS).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_decoders_end_to_end() {
    let devices = r#"
  - name: arduino
    kind: serial
    port: "{dir}/kv-dev"
    baud: 115200
    frame: { delimiter: '\r\n' }
    decoder: keyvalue.rhai
    points:
      - { name: temp, unit: "°C", type: float }
  - name: gps
    kind: serial
    port: "{dir}/gps-dev"
    baud: 4800
    frame: { delimiter: "\r\n" }
    decoder: nmea_gga.rhai
  - name: dust
    kind: serial
    port: "{dir}/pm-dev"
    frame: { length: 10 }
    decoder: binary_frame.rhai
  - name: scale
    kind: serial
    port: "{dir}/json-dev"
    frame: { idle: 50ms }
    decoder: json
"#;
    let files = [
        ("keyvalue.rhai", plugin("keyvalue.rhai")),
        ("nmea_gga.rhai", plugin("nmea_gga.rhai")),
        ("binary_frame.rhai", plugin("binary_frame.rhai")),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let (gw, socats) = gateway(&files, devices, &["kv", "gps", "pm", "json"]);
    let mut sub = Sub::connect(gw.port, &["gw-s/#"], QoS::AtLeastOnce).await;
    let mut waiting = vec!["arduino", "gps", "dust", "scale"];
    while !waiting.is_empty() {
        let m = sub
            .wait_for(SECS, |m| m.topic.starts_with("gw-s/status/"))
            .await;
        if m.json()["state"] == "online" {
            waiting.retain(|d| m.topic != format!("gw-s/status/{d}"));
        }
    }

    socats[0].send(b"temp=21;hum=40\r\n");
    let m = take(&mut sub, "gw-s/arduino/temp").await;
    assert_eq!(m["value"], 21.0);
    assert!(m["value"].is_f64(), "points: type float applies: {m}");
    assert_eq!(m["unit"], "°C");
    assert_eq!(m["quality"], "good");
    let m = take(&mut sub, "gw-s/arduino/hum").await;
    assert_eq!(m["value"], 40);

    socats[1].send(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n");
    let m = take(&mut sub, "gw-s/gps/latitude").await;
    let lat = m["value"].as_f64().expect("number");
    assert!((lat - 48.1173).abs() < 1e-4, "{lat}");
    let m = take(&mut sub, "gw-s/gps/altitude").await;
    assert_eq!(m["value"], 545.4);
    assert_eq!(m["unit"], "m");

    // SDS011: PM2.5 = 12.3, PM10 = 45.6 µg/m³.
    let mut frame = vec![0xAA, 0xC0, 123, 0, 200, 1, 0x12, 0x34];
    let sum = frame[2..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    frame.extend([sum, 0xAB]);
    socats[2].send(&frame);
    let m = take(&mut sub, "gw-s/dust/pm10").await;
    assert_eq!(m["value"], 45.6);
    assert_eq!(m["unit"], "µg/m³");

    socats[3].send(br#"{"weight": 1.25, "stable": true}"#);
    let m = take(&mut sub, "gw-s/scale/weight").await;
    assert_eq!(m["value"], 1.25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_a_throwing_decoder_are_logged_and_reading_goes_on() {
    let script = "fn decode(frame) {\n  if frame.text == \"boom\" {\n    throw \"exploded\";\n  }\n  #{ v: frame.text.len() }\n}\n";
    let devices = r#"
  - name: dev
    kind: serial
    port: "{dir}/a-dev"
    max_frame: 256
    decoder: d.rhai
"#;
    let (gw, socats) = gateway(&[("d.rhai", script)], devices, &["a"]);
    let mut sub = Sub::connect(gw.port, &["gw-s/#"], QoS::AtLeastOnce).await;
    wait_state(&mut sub, "dev", "online").await;

    socats[0].send(&vec![0xEEu8; 20_000]);
    socats[0].send(b"\nboom\nabc\n");
    let m = sub.wait_topic("gw-s/dev/v", SECS).await.json();
    assert_eq!(m["value"], 3, "only the good frame gave a reading");
    let log = gw.wait_log("decoder error", SECS);
    assert!(
        log.contains("d.rhai:3"),
        "script position in the log:\n{log}"
    );
    assert!(log.contains("boom"), "the frame in the log:\n{log}");
    assert!(log.contains("max_frame"), "oversized frame logged:\n{log}");
    // Still running, still reading.
    socats[0].send(b"abcdef\n");
    let m = sub.wait_topic("gw-s/dev/v", SECS).await.json();
    assert_eq!(m["value"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_marks_offline_and_replug_resumes() {
    let devices = r#"
  - name: dev
    kind: serial
    port: "{dir}/u-dev"
    reconnect: { min: 50ms, max: 200ms }
"#;
    let (gw, mut socats) = gateway(&[], devices, &["u"]);
    let mut sub = Sub::connect(gw.port, &["gw-s/#"], QoS::AtLeastOnce).await;
    wait_state(&mut sub, "dev", "online").await;
    socats[0].send(b"{\"n\": 1}\n");
    assert_eq!(sub.wait_topic("gw-s/dev/n", SECS).await.json()["value"], 1);

    socats[0].stop();
    let m = wait_state(&mut sub, "dev", "offline").await.json();
    assert!(m["error"].as_str().is_some_and(|e| !e.is_empty()), "{m}");
    assert!(m["ts"].is_i64());

    let dir = gw.cfg.dir.path().to_path_buf();
    let again = Socat::start(&dir, "u");
    wait_state(&mut sub, "dev", "online").await;
    again.send(b"{\"n\": 2}\n");
    assert_eq!(sub.wait_topic("gw-s/dev/n", SECS).await.json()["value"], 2);
    assert!(gw.log_text().contains("serial port lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_decoder_and_keeps_the_old_one_on_error() {
    let devices = r#"
  - name: dev
    kind: serial
    port: "{dir}/h-dev"
    decoder: d.rhai
"#;
    let (gw, socats) = gateway(
        &[("d.rhai", "fn decode(frame) { #{ v: 1 } }\n")],
        devices,
        &["h"],
    );
    let mut sub = Sub::connect(gw.port, &["gw-s/#"], QoS::AtLeastOnce).await;
    wait_state(&mut sub, "dev", "online").await;
    socats[0].send(b"x\n");
    assert_eq!(sub.wait_topic("gw-s/dev/v", SECS).await.json()["value"], 1);

    gw.cfg.write("d.rhai", "fn decode(frame) {\n  #{ v: }\n}\n");
    gw.signal(Signal::SIGHUP);
    let log = gw.wait_log("decoder not reloaded", SECS);
    assert!(log.contains("d.rhai:2"), "{log}");
    socats[0].send(b"x\n");
    assert_eq!(sub.wait_topic("gw-s/dev/v", SECS).await.json()["value"], 1);

    gw.cfg.write("d.rhai", "fn decode(frame) { #{ v: 2 } }\n");
    gw.signal(Signal::SIGHUP);
    gw.wait_log("decoder reloaded", SECS);
    socats[0].send(b"x\n");
    assert_eq!(sub.wait_topic("gw-s/dev/v", SECS).await.json()["value"], 2);
}

#[test]
fn check_compiles_decoders_and_names_file_and_line() {
    let cfg = ConfigDir::new(
        "gateway:\n  id: gw\ndevices:\n  - name: s\n    kind: serial\n    port: /dev/ttyUSB0\n    decoder: d.rhai\n",
    );
    cfg.write("d.rhai", "fn decode(frame) {\n  let = 2;\n}\n");
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("devices[0].decoder (line 7"), "{err}");
    assert!(err.contains("d.rhai:2"), "{err}");

    cfg.write("d.rhai", "fn decode(frame) { #{ v: 1 } }\n");
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("s (serial /dev/ttyUSB0 9600 8N1"), "{text}");
    assert!(text.contains("d.rhai (fn decode; compiled OK)"), "{text}");

    let cfg = ConfigDir::new(
        "gateway:\n  id: gw\ndevices:\n  - name: s\n    kind: serial\n    port: /dev/ttyUSB0\n    frame: { delimiter: x, idle: 5ms }\n",
    );
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("devices[0].frame (line 7"), "{err}");
}

#[test]
fn the_example_config_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/serial.yaml");
    let out = fieldgate(&["check", "-c", path.to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
