//! The Sparkplug B edge node against real components: the real binary, a
//! real Modbus TCP server, and a host built on Eclipse Tahu's own
//! JavaScript payload library (npm `sparkplug-payload`, tests/js) with
//! MQTT.js, so every payload is decoded by a decoder that is not
//! fieldgate's: a wrong field number or type cannot hide.
//!
//! Skipped (with a line saying so) when tests/js/node_modules is missing;
//! .ci/run installs it with `npm ci --prefix tests/js`.

use std::process::Stdio;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::modbus::header;
use crate::modbus::server::{Registers, TcpServer};
use crate::support::{Gateway, Sub};

const SECS: Duration = Duration::from_secs(10);
const JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// The Tahu-based host (tests/js/sparkplug_host.js) on the gateway's broker.
struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every Sparkplug message received, in order.
    seen: Vec<Value>,
    /// How far [`Host::next`] has looked in `seen`.
    cursor: usize,
}

fn have_tahu() -> bool {
    let ok = std::path::Path::new(JS)
        .join("node_modules/sparkplug-payload")
        .is_dir();
    if !ok {
        eprintln!(
            "SKIPPED: sparkplug-payload not installed (npm ci --prefix tests/js; .ci/run does it)"
        );
    }
    ok
}

impl Host {
    async fn connect(port: u16) -> Host {
        let mut child = tokio::process::Command::new("node")
            .arg(format!("{JS}/sparkplug_host.js"))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut h = Host {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            cursor: 0,
        };
        // retained messages (a STATE) may come before the SUBACK's callback
        loop {
            let v = h.line().await;
            if v == json!({"ready": true}) {
                return h;
            }
            h.seen.push(v);
        }
    }

    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(SECS, self.lines.next_line())
            .await
            .expect("the host said something in time")
            .expect("read the host's output")
            .expect("the host is running");
        serde_json::from_str(&line).expect("the host prints JSON")
    }

    /// The next message not looked at yet whose topic ends with `suffix`
    /// (those before it are skipped); every message is kept in `seen`.
    async fn next(&mut self, suffix: &str) -> Value {
        loop {
            while self.cursor < self.seen.len() {
                let v = &self.seen[self.cursor];
                self.cursor += 1;
                assert!(v.get("error").is_none(), "Tahu could not decode: {v}");
                if v["topic"].as_str().is_some_and(|t| t.ends_with(suffix)) {
                    return v.clone();
                }
            }
            let v = self.line().await;
            if v.get("published").is_none() {
                self.seen.push(v);
            }
        }
    }

    /// Keeps what the host prints for `d` in `seen`.
    async fn drain_for(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(until, self.lines.next_line()).await
        {
            self.seen
                .push(serde_json::from_str(&line).expect("the host prints JSON"));
        }
    }

    async fn publish(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("to the host");
        loop {
            let v = self.line().await;
            if v.get("published").is_some() {
                return;
            }
            self.seen.push(v);
        }
    }

    /// NCMD `Node Control/Rebirth` = true.
    async fn rebirth(&mut self, group: &str, node: &str) {
        self.publish(json!({
            "topic": format!("spBv1.0/{group}/NCMD/{node}"),
            "sparkplug": {"timestamp": 1, "metrics": [
                {"name": "Node Control/Rebirth", "type": "Boolean", "value": true}
            ]}
        }))
        .await;
    }

    /// The primary host's retained STATE (3.0 JSON).
    async fn state(&mut self, host: &str, online: bool, ts: i64) {
        self.publish(json!({
            "topic": format!("spBv1.0/STATE/{host}"),
            "text": json!({"online": online, "timestamp": ts}).to_string(),
            "retain": true
        }))
        .await;
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn metric<'a>(payload: &'a Value, name: &str) -> &'a Value {
    payload["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no metric {name} in {payload}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The seq of every message after the last NBIRTH in `seen`, which must
/// count on from 0 by one, wrapping after 255 (NDEATH has none).
fn assert_seq_continuity(seen: &[Value]) -> usize {
    let start = seen
        .iter()
        .rposition(|m| m["topic"].as_str().unwrap().contains("/NBIRTH/"))
        .expect("an NBIRTH");
    let mut expect = 0u64;
    let mut n = 0;
    for m in &seen[start..] {
        let topic = m["topic"].as_str().unwrap();
        if topic.contains("/NDEATH/") || topic.contains("/STATE/") || topic.contains("CMD/") {
            continue;
        }
        assert_eq!(m["payload"]["seq"], expect, "seq of {m}");
        expect = (expect + 1) % 256;
        n += 1;
    }
    n
}

fn plc_yaml(gw: &str, addr: &str, extra: &str) -> String {
    format!(
        "{}  - name: plc\n    kind: modbus-tcp\n    address: \"{addr}\"\n    poll: 100ms\n    timeout: 300ms\n    retries: 0\n    points:\n      - {{ name: temperature, table: holding, address: 0, type: i16, scale: 0.1, unit: \"°C\" }}\n      - {{ name: setpoint, table: holding, address: 1, type: i16, writable: true, max_write_rate: 10/s }}\n      - {{ name: fixed, table: holding, address: 2, type: u16 }}\n      - {{ name: pump, table: coil, address: 3, writable: true }}\nsparkplug:\n  group_id: plant\n  edge_node_id: node1\n{extra}",
        header(gw)
    )
}

/// Births (every metric with name, alias, datatype, unit, scale and
/// writable flag), report by exception by alias, a DCMD write reaching the
/// Modbus server and read back, a write to a read-only metric refused, a
/// device's death and rebirth, NCMD rebirth, seq in order, NDEATH on a
/// clean stop with the NBIRTH's bdSeq, and bdSeq counting on across a
/// restart.
#[tokio::test]
async fn births_data_commands_and_deaths_decode_with_tahu() {
    if !have_tahu() {
        return;
    }
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &[215, 5, 7]);
        b.coils.insert(3, false);
    });
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = plc_yaml("gw-sp", &server.addr.to_string(), "");
    let gw = Gateway::start(&yaml);
    let mut host = Host::connect(gw.port).await;

    // no primary host: births went out at start; the host asks again
    host.rebirth("plant", "node1").await;
    let nbirth = host.next("/NBIRTH/node1").await;
    let p = &nbirth["payload"];
    assert_eq!(p["seq"], 0);
    let bd_seq = metric(p, "bdSeq")["value"].as_i64().expect("bdSeq");
    assert_eq!(metric(p, "bdSeq")["type"], "Int64");
    assert_eq!(metric(p, "Node Control/Rebirth")["value"], false);
    assert_eq!(metric(p, "Node Control/Rebirth")["type"], "Boolean");

    let dbirth = host.next("/DBIRTH/node1/plc").await;
    let p = &dbirth["payload"];
    assert_eq!(p["seq"], 1);
    let temp = metric(p, "temperature");
    assert_eq!(temp["type"], "Double");
    assert!(
        (temp["value"].as_f64().unwrap() - 21.5).abs() < 1e-9,
        "{temp}"
    );
    assert_eq!(temp["properties"]["engUnit"]["value"], "°C");
    assert_eq!(temp["properties"]["scale"]["value"], 0.1);
    assert_eq!(temp["properties"]["writable"]["value"], false);
    let setpoint = metric(p, "setpoint");
    assert_eq!(setpoint["type"], "Int16");
    assert_eq!(setpoint["value"], 5);
    assert_eq!(setpoint["properties"]["writable"]["value"], true);
    assert_eq!(metric(p, "fixed")["type"], "UInt16");
    assert_eq!(metric(p, "pump")["type"], "Boolean");
    let aliases: Vec<i64> = p["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["alias"].as_i64().expect("alias"))
        .collect();
    let mut unique = aliases.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{aliases:?}");
    let alias = |name: &str| metric(p, name)["alias"].clone();
    let (temp_alias, setpoint_alias) = (alias("temperature"), alias("setpoint"));

    // a negative temperature: only that metric, by alias, no name
    regs.unit(1, |b| b.set_holding(0, &[(-35i16) as u16]));
    let ddata = loop {
        let d = host.next("/DDATA/node1/plc").await;
        if d["payload"]["metrics"][0]["alias"] == temp_alias {
            break d;
        }
    };
    let ms = ddata["payload"]["metrics"].as_array().unwrap();
    assert_eq!(ms.len(), 1, "report by exception: {ddata}");
    assert!(
        ms[0].get("name").is_none(),
        "aliases after the birth: {ddata}"
    );
    assert!((ms[0]["value"].as_f64().unwrap() + 3.5).abs() < 1e-9);

    // DCMD to a writable metric: the server gets it, the read-back comes as DDATA
    host.publish(json!({
        "topic": "spBv1.0/plant/DCMD/node1/plc",
        "sparkplug": {"timestamp": 1, "metrics": [{"name": "setpoint", "type": "Int16", "value": -42}]}
    }))
    .await;
    let back = loop {
        let d = host.next("/DDATA/node1/plc").await;
        if d["payload"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["alias"] == setpoint_alias)
        {
            break d;
        }
    };
    assert_eq!(regs.holding(1, 1, 1), vec![(-42i16) as u16]);
    let m = back["payload"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["alias"] == setpoint_alias)
        .unwrap()
        .clone();
    assert_eq!(m["value"], -42);
    assert_eq!(m["type"], "Int16");

    // DCMD to a read-only metric: refused and logged, the register untouched
    host.publish(json!({
        "topic": "spBv1.0/plant/DCMD/node1/plc",
        "sparkplug": {"timestamp": 1, "metrics": [{"name": "fixed", "type": "UInt16", "value": 99}]}
    }))
    .await;
    gw.wait_log("DCMD plc/fixed refused: the point is not writable", SECS);
    assert_eq!(regs.holding(1, 2, 1), vec![7]);

    // the device stops answering: DDEATH; it answers again: DBIRTH
    regs.lock().silent.insert(1);
    host.next("/DDEATH/node1/plc").await;
    regs.lock().silent.remove(&1);
    let reborn = host.next("/DBIRTH/node1/plc").await;
    assert_eq!(metric(&reborn["payload"], "setpoint")["value"], -42);

    let n = assert_seq_continuity(&host.seen);
    assert!(n >= 5, "{n} messages after NBIRTH");

    // clean stop: NDEATH with the NBIRTH's bdSeq
    let mut gw = gw;
    gw.terminate(SECS);
    let death = host.next("/NDEATH/node1").await;
    assert_eq!(metric(&death["payload"], "bdSeq")["value"], bd_seq);
    assert!(death["payload"].get("seq").is_none(), "NDEATH has no seq");
    drop(host);

    // restarted on the same data_dir: the next bdSeq
    let cfg = std::mem::replace(&mut gw.cfg, crate::support::ConfigDir::new(""));
    let gw = Gateway::spawn(cfg, gw.port, &[]);
    let mut host = Host::connect(gw.port).await;
    host.rebirth("plant", "node1").await;
    let again = host.next("/NBIRTH/node1").await;
    assert_eq!(
        metric(&again["payload"], "bdSeq")["value"],
        (bd_seq + 1) % 256
    );
}

/// seq runs 0..=255 and wraps to 0 over every message type, with a
/// counter that changes at every poll.
#[tokio::test]
async fn seq_wraps_after_255() {
    if !have_tahu() {
        return;
    }
    let yaml = format!(
        "{}  - name: sim\n    kind: simulated\n    poll: 10ms\n    points:\n      - {{ name: n, signal: counter }}\nsparkplug:\n  group_id: g\n",
        header("gw-wrap")
    );
    let gw = Gateway::start(&yaml);
    let mut host = Host::connect(gw.port).await;
    host.rebirth("g", "gw-wrap").await;
    host.next("/NBIRTH/gw-wrap").await;
    let mut wrapped = false;
    for _ in 0..400 {
        let d = host.next("/sim").await;
        if d["payload"]["seq"] == 0 {
            wrapped = true;
            break;
        }
    }
    assert!(wrapped, "seq came back to 0");
    assert!(assert_seq_continuity(&host.seen) >= 256);
}

/// `rules.payload: none`: readings leave as Sparkplug only. DDATA arrive
/// and the device's status is published, but no JSON message on a reading
/// topic (with `per_point` one would come at every poll). No rules stage
/// runs then: SIGHUP is still answered (not SIGHUP's default: the end of
/// the process), and a clean stop still ends with the node's NDEATH.
#[tokio::test]
async fn payload_none_sends_sparkplug_only() {
    let yaml = format!(
        "{}  - name: sim\n    kind: simulated\n    poll: 50ms\n    points:\n      - {{ name: n, signal: counter }}\nrules:\n  payload: none\nsparkplug:\n  group_id: g\n",
        header("gw-none")
    );
    let mut gw = Gateway::start(&yaml);
    let ddata = "spBv1.0/g/DDATA/gw-none/sim";
    let ndeath = "spBv1.0/g/NDEATH/gw-none";
    let mut sub = Sub::connect(gw.port, &["gw-none/#", ddata, ndeath], QoS::AtMostOnce).await;
    sub.wait_topic("gw-none/status/sim", SECS).await;
    for _ in 0..6 {
        sub.wait_topic(ddata, SECS).await;
    }
    let readings: Vec<_> = sub
        .seen
        .iter()
        .filter(|m| m.topic.starts_with("gw-none/sim"))
        .map(|m| (&m.topic, m.text()))
        .collect();
    assert!(readings.is_empty(), "payload none published {readings:?}");

    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_log("SIGHUP: no rule scripts configured", SECS);
    sub.seen.clear();
    sub.wait_topic(ddata, SECS).await;
    // the subscriber reads while the gateway stops
    let stop = tokio::task::spawn_blocking(move || gw.terminate(SECS));
    sub.wait_topic(ndeath, SECS).await;
    assert!(stop.await.expect("join").success());
}

/// `(value, timestamp, historical)` of every metric of `sim` the host got
/// in DBIRTH and DDATA messages.
fn sim_values(seen: &[Value]) -> Vec<(i64, i64, bool)> {
    seen.iter()
        .filter(|m| {
            let t = m["topic"].as_str().unwrap();
            t.ends_with("/sim") && (t.contains("/DDATA/") || t.contains("/DBIRTH/"))
        })
        .flat_map(|m| m["payload"]["metrics"].as_array().unwrap().clone())
        .map(|m| {
            (
                m["value"].as_i64().expect("a counter value"),
                m["timestamp"].as_i64().expect("a metric timestamp"),
                m["isHistorical"] == true,
            )
        })
        .collect()
}

/// With a primary host: no births until its STATE says online; when it
/// goes offline, NDEATH and data is stored (across a SIGKILL too); when it
/// is back, births first, then the stored DDATA with `is_historical` and
/// the original timestamps, in order, paced, while live data goes on live.
/// Every counter value of the killed process reaches the host (each DDATA
/// committed at once: `history_commit_window: 0s`; the default window's
/// DDATA are what a SIGKILL may lose).
#[tokio::test]
async fn history_after_a_primary_host_outage_survives_sigkill() {
    if !have_tahu() {
        return;
    }
    let yaml = format!(
        "{}  - name: sim\n    kind: simulated\n    poll: 50ms\n    points:\n      - {{ name: n, signal: counter }}\nsparkplug:\n  group_id: g\n  edge_node_id: edge\n  primary_host_id: scada\n  history_rate: 20\n  history_batch: 4\n  history_commit_window: 0s\n",
        header("gw-hist")
    );
    let gw = Gateway::start(&yaml);
    let mut host = Host::connect(gw.port).await;
    host.state("scada", true, now_ms()).await;
    let first = host.next("/NBIRTH/edge").await;
    let bd_first = metric(&first["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    assert!(
        host.seen[..host.cursor - 1]
            .iter()
            .all(|m| !m["topic"].as_str().unwrap().contains("/DDATA/")),
        "nothing before the births: {:?}",
        host.seen
    );
    host.next("/DBIRTH/edge/sim").await;
    host.next("/DDATA/edge/sim").await;

    host.state("scada", false, now_ms()).await;
    let death = host.next("/NDEATH/edge").await;
    assert_eq!(metric(&death["payload"], "bdSeq")["value"], bd_first);
    let offline_at = now_ms();
    let mut got = sim_values(&host.seen);
    // the host is away: the counter goes on into the history
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = now_ms();
    let gw = gw.sigkill_and_restart(&[]);
    drop(host);

    let mut host = Host::connect(gw.port).await;
    host.state("scada", true, now_ms()).await;
    let nbirth = host.next("/NBIRTH/edge").await;
    let bd_now = metric(&nbirth["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    assert_ne!(bd_now, bd_first, "a new session has a new bdSeq");
    let born_at = nbirth["payload"]["timestamp"].as_i64().unwrap();
    let dbirth = host.next("/DBIRTH/edge/sim").await;
    assert_eq!(dbirth["payload"]["seq"], 1);

    // DDATA until the history has been sent (10 live ones in a row)
    let (mut live_during_drain, mut pending_live) = (0, 0);
    let mut quiet = 0;
    while quiet < 10 {
        let d = host.next("/DDATA/edge/sim").await;
        let ms = d["payload"]["metrics"].as_array().unwrap();
        assert!(ms.len() <= 4, "history_batch: {d}");
        let historical = ms.iter().filter(|m| m["isHistorical"] == true).count();
        assert!(historical == 0 || historical == ms.len(), "{d}");
        if historical > 0 {
            quiet = 0;
            live_during_drain += pending_live;
            pending_live = 0;
        } else {
            quiet += 1;
            pending_live += 1;
        }
    }
    assert_seq_continuity(&host.seen);
    let now = sim_values(&host.seen);
    let history: Vec<(i64, i64)> = now.iter().filter(|v| v.2).map(|v| (v.0, v.1)).collect();
    // in order, with their original timestamps, from before the births
    assert!(history.windows(2).all(|w| w[0].1 <= w[1].1), "{history:?}");
    assert!(history.iter().all(|h| h.1 < born_at), "{history:?}");
    assert!(
        history
            .iter()
            .filter(|h| h.1 > offline_at && h.1 < killed_at)
            .count()
            >= 20,
        "the outage's data came as history: {history:?}"
    );
    assert!(live_during_drain > 0, "live data went on during the drain");
    // nothing of the killed process lost: its counter from 0 to its last
    // value, without a gap, live or historical
    got.extend(now);
    assert_nothing_lost(&got, killed_at);
}

/// `fieldgate check` prints the node's and each device's topics and the
/// metrics with alias, datatype, unit, scale and writable flag; a bad
/// `sparkplug:` section exits 78 naming each key and its line.
#[test]
fn check_prints_the_topics_and_metrics_and_names_bad_keys_with_lines() {
    let fill = |y: String| {
        y.replace("{port}", "1883")
            .replace("{data_dir}", "/tmp/gw-chk")
    };
    let yaml = fill(plc_yaml(
        "gw-chk",
        "127.0.0.1:1502",
        "  primary_host_id: scada\n",
    ));
    let (code, text) = crate::config_errors::check(&yaml);
    assert_eq!(code, 0, "{text}");
    for line in [
        "sparkplug  group \"plant\", edge node \"node1\", on the embedded broker",
        "births wait for spBv1.0/STATE/scada online",
        "spBv1.0/plant/NBIRTH/node1 (bdSeq, \"Node Control/Rebirth\" alias 1)",
        "device plc: spBv1.0/plant/{DBIRTH,DDATA,DDEATH,DCMD}/node1/plc",
        "temperature      alias 2    Double [°C] scale 0.1",
        "setpoint         alias 3    Int16 writable",
        "fixed            alias 4    UInt16",
        "pump             alias 5    Boolean writable",
        "Sparkplug hosts: whoever may publish to spBv1.0/plant/DCMD/node1/+",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let bad = fill(plc_yaml(
        "gw-chk",
        "127.0.0.1:1502",
        "  primary_host_id: \"a/#\"\n  target: uplink\n  deadband: -1\n  history_commit_window: 11s\n",
    ));
    let (code, text) = crate::config_errors::check(&bad);
    assert_eq!(code, 78, "{text}");
    let line_of = |key: &str| {
        bad.lines()
            .position(|l| l.trim_start().starts_with(key))
            .map(|i| i + 1)
            .unwrap()
    };
    for (path, key) in [
        ("sparkplug.primary_host_id", "primary_host_id:"),
        ("sparkplug.target", "target:"),
        ("sparkplug.deadband", "deadband:"),
        ("sparkplug.history_commit_window", "history_commit_window:"),
    ] {
        let want = format!("{path} (line {}", line_of(key));
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    // the node's own upstream session may be TLS, as the bridge's
    let tls = uplink_yaml("gw-chk", "n", 8883, "").replace("mqtt://", "mqtts://");
    let (code, text) = crate::config_errors::check(&fill(tls));
    assert_eq!(code, 0, "{text}");
}

/// `uplink_yaml` over `mqtts://localhost:{port}` trusting `ca`.
fn uplink_tls_yaml(gw: &str, node: &str, port: u16, ca: &std::path::Path) -> String {
    uplink_yaml(gw, node, port, "")
        .replace("mqtt://127.0.0.1", "mqtts://localhost")
        .replace(
            "uplink:\n",
            &format!("uplink:\n  ca_file: \"{}\"\n", ca.display()),
        )
}

/// Target uplink over `mqtts://`: the gateway knows only mosquitto's TLS
/// listener, and its node's own session there carries births and data to
/// a host on the plain listener (with the uplink's `ca_file`, as the
/// bridge's session); a node that does not trust the broker's certificate
/// sends nothing and logs why.
#[tokio::test]
async fn uplink_target_over_mqtts_with_the_uplinks_ca() {
    if !have_tahu() {
        return;
    }
    let (up, pki) = crate::upstream::Mosquitto::start_tls();
    let tls_port = up.tls_port.expect("tls port");
    let mut host = Host::connect(up.port).await;
    let gw = Gateway::start(&uplink_tls_yaml("gw-tls", "edge", tls_port, &pki.ca));
    host.next("/NBIRTH/edge").await;
    host.next("/DBIRTH/edge/sim").await;
    let data = host.next("/DDATA/edge/sim").await;
    // after the births, DDATA names its metrics by alias only
    assert!(data["payload"]["metrics"][0]["value"].is_number(), "{data}");
    drop(gw);

    // a CA that did not sign the broker's certificate
    let other = tempfile::tempdir().expect("tempdir");
    let wrong = crate::upstream::make_pki(other.path(), "other");
    let gw = Gateway::start(&uplink_tls_yaml("gw-bad", "stranger", tls_port, &wrong.ca));
    let log = gw.wait_log("Sparkplug upstream session down", Duration::from_secs(10));
    assert!(
        log.contains("UnknownIssuer"),
        "not a certificate failure:\n{log}"
    );
    host.drain_for(Duration::from_secs(1)).await;
    assert!(
        !host
            .seen
            .iter()
            .any(|m| m["topic"].as_str().is_some_and(|t| t.contains("/stranger"))),
        "a node that does not trust the broker published: {:?}",
        host.seen
    );
}

/// A gateway with a simulated counter every 50 ms and a Sparkplug node
/// `node` on the uplink at `port`; `extra`: more `sparkplug:` keys.
fn uplink_yaml(gw: &str, node: &str, port: u16, extra: &str) -> String {
    format!(
        "{}  - name: sim\n    kind: simulated\n    poll: 50ms\n    points:\n      - {{ name: n, signal: counter }}\nuplink:\n  url: \"mqtt://127.0.0.1:{port}\"\n  client_id: {gw}\n  forward:\n    - {{ filter: \"{gw}/status\", qos: 1 }}\nsparkplug:\n  group_id: g\n  edge_node_id: {node}\n  target: uplink\n{extra}",
        header(gw)
    )
}

/// The counter values of a killed process (metrics stamped before
/// `killed_at`) run from 0 to their last without a gap: nothing lost.
fn assert_nothing_lost(values: &[(i64, i64, bool)], killed_at: i64) {
    let mut first_run: Vec<i64> = values
        .iter()
        .filter(|v| v.1 < killed_at)
        .map(|v| v.0)
        .collect();
    first_run.sort_unstable();
    first_run.dedup();
    let last = *first_run.last().expect("values of the killed process");
    assert!(last >= 30, "{first_run:?}");
    assert_eq!(first_run, (0..=last).collect::<Vec<i64>>());
}

/// Target uplink on a real mosquitto: the node's own session carries its
/// NDEATH as the will, so a SIGKILL makes mosquitto publish the NDEATH
/// with the bdSeq of the NBIRTH; the restarted node takes the next bdSeq;
/// when the primary host goes offline the node sends NDEATH and starts a
/// new session that waits; when the host returns, births and the stored
/// DDATA as history (QoS 1, each row deleted on its PUBACK).
#[tokio::test]
async fn uplink_target_has_ndeath_as_its_will_and_sends_history() {
    if !have_tahu() {
        return;
    }
    let up = crate::upstream::Mosquitto::start();
    let yaml = uplink_yaml(
        "gw-up",
        "edge",
        up.port,
        "  primary_host_id: scada\n  history_rate: 50\n  history_batch: 5\n",
    );
    let mut host = Host::connect(up.port).await;
    host.state("scada", true, now_ms()).await;
    let gw = Gateway::start(&yaml);
    let first = host.next("/NBIRTH/edge").await;
    let bd = metric(&first["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    host.next("/DBIRTH/edge/sim").await;
    host.next("/DDATA/edge/sim").await;

    // SIGKILL: mosquitto publishes the will
    let mut gw = gw;
    gw.kill();
    let will = host.next("/NDEATH/edge").await;
    assert_eq!(metric(&will["payload"], "bdSeq")["value"], bd);
    let cfg = std::mem::replace(&mut gw.cfg, crate::support::ConfigDir::new(""));
    let gw = Gateway::spawn(cfg, gw.port, &[]);
    let second = host.next("/NBIRTH/edge").await;
    let bd2 = metric(&second["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    assert_eq!(bd2, (bd + 1) % 256);
    host.next("/DDATA/edge/sim").await;

    // the host goes away: NDEATH of this session, data stored
    host.state("scada", false, now_ms()).await;
    let death = host.next("/NDEATH/edge").await;
    assert_eq!(metric(&death["payload"], "bdSeq")["value"], bd2);
    let offline_at = now_ms();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let back_at = now_ms();
    host.state("scada", true, back_at).await;
    let third = host.next("/NBIRTH/edge").await;
    let bd3 = metric(&third["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    assert_eq!(bd3, (bd2 + 1) % 256, "a new session after the disconnect");
    host.next("/DBIRTH/edge/sim").await;
    let mut history = Vec::new();
    while history.len() < 15 {
        let d = host.next("/DDATA/edge/sim").await;
        for m in d["payload"]["metrics"].as_array().unwrap() {
            if m["isHistorical"] == true {
                history.push(m["timestamp"].as_i64().unwrap());
            }
        }
    }
    assert!(history.windows(2).all(|w| w[0] <= w[1]), "{history:?}");
    assert!(
        history
            .iter()
            .filter(|t| **t > offline_at && **t < back_at)
            .count()
            >= 10,
        "{history:?}"
    );
    assert_seq_continuity(&host.seen);
    drop(gw);
}

/// Target uplink without a primary host: while the upstream broker is
/// down, DDATA is stored; when it is back, a new session (the next bdSeq),
/// births, then the outage's DDATA as history with its timestamps, then
/// live data; after a clean stop the host has that session's NDEATH.
#[tokio::test]
async fn uplink_outage_is_sent_as_history_after_the_births() {
    if !have_tahu() {
        return;
    }
    let mut up = crate::upstream::Mosquitto::start();
    let port = up.port;
    let yaml = uplink_yaml("gw-out", "out", port, "");
    let gw = Gateway::start(&yaml);
    let mut host = Host::connect(port).await;
    host.rebirth("g", "out").await;
    let first = host.next("/NBIRTH/out").await;
    let bd = metric(&first["payload"], "bdSeq")["value"]
        .as_i64()
        .unwrap();
    host.next("/DDATA/out/sim").await;
    drop(host);

    up.kill();
    let down_at = now_ms();
    gw.wait_log("Sparkplug upstream session down", SECS);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let up = crate::upstream::Mosquitto::launch(port, None);
    let mut host = Host::connect(up.port).await;
    let nbirth = host.next("/NBIRTH/out").await;
    let up_at = nbirth["payload"]["timestamp"].as_i64().unwrap();
    assert_ne!(metric(&nbirth["payload"], "bdSeq")["value"], bd);
    host.next("/DBIRTH/out/sim").await;
    let mut history = Vec::new();
    loop {
        let d = host.next("/DDATA/out/sim").await;
        let m = &d["payload"]["metrics"][0];
        if m["isHistorical"] != true {
            break;
        }
        history.extend(d["payload"]["metrics"].as_array().unwrap().iter().map(|m| {
            (
                m["value"].as_i64().unwrap(),
                m["timestamp"].as_i64().unwrap(),
            )
        }));
    }
    assert!(
        history
            .iter()
            .filter(|h| h.1 > down_at && h.1 < up_at)
            .count()
            >= 15,
        "the outage's data came first, as history: {history:?}"
    );
    assert!(
        history.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "{history:?}"
    );
    assert_seq_continuity(&host.seen);

    // a clean stop: the NDEATH of this session (the explicit one, or the
    // will had the DISCONNECT not gone out: the host sees the same bdSeq)
    let mut gw = gw;
    gw.terminate(SECS);
    let death = host.next("/NDEATH/out").await;
    assert_eq!(
        metric(&death["payload"], "bdSeq")["value"],
        metric(&nbirth["payload"], "bdSeq")["value"]
    );
}

/// Target uplink: a SIGKILL in the middle of the history drain loses
/// nothing: rows are deleted only on their PUBACK, so the restarted node
/// sends what was not acknowledged (at least once). Every counter value of
/// the killed process reaches the host, live or as history.
#[tokio::test]
async fn uplink_history_survives_a_sigkill_during_the_drain() {
    if !have_tahu() {
        return;
    }
    let up = crate::upstream::Mosquitto::start();
    let yaml = uplink_yaml(
        "gw-kd",
        "kd",
        up.port,
        "  primary_host_id: scada\n  history_rate: 10\n  history_batch: 2\n",
    );
    let mut host = Host::connect(up.port).await;
    host.state("scada", true, now_ms()).await;
    let mut gw = Gateway::start(&yaml);
    host.next("/NBIRTH/kd").await;
    host.next("/DDATA/kd/sim").await;
    host.state("scada", false, now_ms()).await;
    host.next("/NDEATH/kd").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.state("scada", true, now_ms()).await;
    host.next("/NBIRTH/kd").await;
    // two historical messages in, the drain is far from done: SIGKILL
    let mut historical = 0;
    while historical < 2 {
        let d = host.next("/DDATA/kd/sim").await;
        if d["payload"]["metrics"][0]["isHistorical"] == true {
            historical += 1;
        }
    }
    let killed_at = now_ms();
    gw.kill();
    host.next("/NDEATH/kd").await;
    let cfg = std::mem::replace(&mut gw.cfg, crate::support::ConfigDir::new(""));
    let _gw = Gateway::spawn(cfg, gw.port, &[]);
    host.next("/NBIRTH/kd").await;
    let mut quiet = 0;
    while quiet < 20 {
        let d = host.next("/DDATA/kd/sim").await;
        if d["payload"]["metrics"][0]["isHistorical"] == true {
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    assert_nothing_lost(&sim_values(&host.seen), killed_at);
}
