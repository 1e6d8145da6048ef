//! The status page's trends in a real browser (headless chromium read over
//! the DevTools protocol, as in `page_live`): a sparkline per numeric point
//! that moves as new values arrive, a silent device drawn as a gap, the
//! larger chart of a point, a text point's changes; the uplink chart with a
//! cut and a restore the test makes with a proxy, and the broker's clients
//! table listing a `mosquitto_sub`. Screenshots at 1280 and 390 px
//! (`FIELDGATE_SCREENSHOTS=docs` keeps them). The history API over plain
//! HTTP is `page_api`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::Value as Json;

use crate::modbus::server::{Registers, TcpServer};
use crate::page::get;
use crate::page_live::{Killed, LivePage};
use crate::support::{Gateway, Sub, free_port};
use crate::upstream::{Mosquitto, Proxy};

const SECS: Duration = Duration::from_secs(20);

pub(crate) fn get_json(port: u16, path: &str, basic: Option<&str>) -> Json {
    let (status, _, body) = get(port, path, basic);
    assert!(status.contains("200"), "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `mosquitto_sub` connected as `id` with protocol `version`.
fn mosquitto_sub(port: u16, id: &str, version: &str) -> Killed {
    Killed(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id])
            .args(["-V", version, "-t", "panel/#"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)"),
    )
}

/// An element attribute in the page ('' when the element is missing).
fn attr(id: &str, name: &str) -> String {
    format!(
        "(() => {{ const e = document.getElementById('{id}'); return e ? String(e.getAttribute('{name}')) : ''; }})()"
    )
}

// multi-threaded: the Modbus server runs on this runtime, and the
// DevTools and HTTP helpers block their thread while they wait
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparklines_move_live_a_silent_device_is_a_gap_and_a_point_opens_its_hour() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[100]));
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let http = free_port();
    let gw = Gateway::start(&format!(
        r#"
gateway:
  id: trend-gw
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
http:
  listen: "127.0.0.1:{http}"
  history_bucket: 5s
devices:
  - name: plc
    kind: modbus-tcp
    address: "{addr}"
    poll: 200ms
    timeout: 100ms
    points:
      - {{ name: level, table: holding, address: 0, type: u16, unit: cm }}
  - name: line
    kind: simulated
    poll: 500ms
    points:
      - {{ name: mode, signal: constant, value: auto }}
"#,
        addr = server.addr
    ));
    let mut sub = Sub::connect(gw.port, &["trend-gw/plc/level"], QoS::AtMostOnce).await;
    sub.next(SECS).await;

    let _one_browser = crate::page::BROWSER.lock().await;
    let mut page = LivePage::open(http, &format!("http://127.0.0.1:{http}/"), "1280,900").await;
    // a sparkline for the numeric point, with min and max beside it
    let points = |s: &str| s.parse::<u32>().unwrap_or(0);
    page.until(SECS, &attr("spark-plc-level", "data-points"), |s| {
        points(s) >= 3
    })
    .await;
    let path = "(() => { const e = document.querySelector('#spark-plc-level path'); return e ? e.getAttribute('d') : ''; })()";
    let before = page.eval(path).await;
    // new values arrive in the same page and move the line (each held
    // past one event interval, so the live stream carries it)
    for v in [140u16, 90, 160] {
        regs.unit(1, |b| b.set_holding(0, &[v]));
        tokio::time::sleep(Duration::from_millis(4000)).await;
    }
    let after = page
        .until(SECS, path, |d| !d.is_empty() && d != before)
        .await;
    assert_ne!(after, before);
    let mm = "(() => document.getElementById('mm-plc-level').textContent)()";
    page.until(SECS, mm, |t| t == "90 – 160").await;
    assert_eq!(
        page.eval("String(performance.getEntriesByType('navigation').length)")
            .await,
        "1",
        "not reloaded"
    );
    // a text point lists its changes
    let changes = "(() => { const e = document.getElementById('changes-line-mode'); return e ? e.textContent : ''; })()";
    page.until(SECS, changes, |t| t.contains("auto")).await;

    // the device goes silent (offline), then answers again: a gap, not a line
    assert_eq!(
        page.eval(&attr("spark-plc-level", "data-segments")).await,
        "1",
        "{}",
        get_json(http, "/api/v1/devices/plc/points/level/history", None)
    );
    regs.lock().silent.insert(1);
    page.until(SECS, &attr("dev-plc", "data-state"), |s| s == "offline")
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    regs.lock().silent.remove(&1);
    page.until(SECS, &attr("dev-plc", "data-state"), |s| s == "online")
        .await;
    page.until(SECS, &attr("spark-plc-level", "data-segments"), |s| {
        s.parse::<u32>().unwrap_or(0) >= 2
    })
    .await;
    let h = get_json(http, "/api/v1/devices/plc/points/level/history", None);
    assert!(
        h["raw"].as_array().unwrap().iter().any(|r| r[1].is_null()),
        "the offline stretch is a gap in the raw readings: {}",
        h["raw"]
    );

    // tapping the point opens its hour: unit, time axis, CSV link
    page.eval("(() => { document.querySelector('tr[data-point=level] svg.spark').dispatchEvent(new MouseEvent('click', {bubbles: true})); return ''; })()")
        .await;
    let chart = "(() => { const o = document.getElementById('overlay'); const c = document.getElementById('big-chart'); \
                 return (o && !o.hidden && c) ? o.querySelector('h2').textContent + '|' + c.querySelectorAll('text.tick').length + '|' + \
                 document.getElementById('csv').getAttribute('href') : ''; })()";
    let shown = page.until(SECS, chart, |s| !s.is_empty()).await;
    let parts: Vec<&str> = shown.split('|').collect();
    assert!(
        parts[0].contains("plc / level") && parts[0].contains("cm"),
        "{shown}"
    );
    assert!(
        parts[1].parse::<u32>().unwrap() >= 3,
        "axis labels: {shown}"
    );
    assert_eq!(
        parts[2],
        "/api/v1/devices/plc/points/level/history?format=csv"
    );
}

#[tokio::test]
async fn uplink_chart_marks_a_cut_and_a_restore_and_clients_are_listed() {
    let upstream = Mosquitto::start();
    let proxy = Proxy::start(upstream.port).await;
    let http = free_port();
    let gw = Gateway::start(&format!(
        r#"
gateway:
  id: gw1
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
http:
  listen: "127.0.0.1:{http}"
  history_bucket: 5s
devices:
  - name: line
    kind: simulated
    poll: 200ms
    points:
      - {{ name: parts, signal: counter }}
      - {{ name: speed, signal: ramp, period: 30s, min: 0, max: 1200, unit: rpm }}
      - {{ name: temperature, signal: sine, period: 20s, min: 60, max: 80, unit: "°C" }}
uplink:
  url: mqtt://127.0.0.1:{proxy}
  client_id: gw1-page
  keep_alive: 5s
  reconnect: {{ min: 100ms, max: 500ms }}
  forward:
    - {{ filter: "gw1/#", prefix: "site/", qos: 1 }}
"#,
        proxy = proxy.port
    ));
    let _panel = mosquitto_sub(gw.port, "hmi-panel-31", "mqttv31");
    let _tool = mosquitto_sub(gw.port, "node-red-311", "mqttv311");
    let connected = |up: bool| move |s: &Json| s["uplink"]["connected"] == up;
    wait_status(http, connected(true)).await;

    // the clients, as the API lists them: a client is listed from its
    // CONNECT on, so wait until both have also subscribed
    let clients = poll_json(http, "/api/v1/clients", None, |c| {
        let listed = c["clients"].as_array().unwrap();
        listed.len() >= 2 && listed.iter().all(|c| c["subscriptions"].as_u64() > Some(0))
    })
    .await;
    let panel = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "hmi-panel-31")
        .expect("the 3.1 client");
    assert_eq!(panel["protocol_level"], 3);
    assert_eq!(panel["subscriptions"], 1);
    assert!(panel["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(panel["connected_since"].as_i64().unwrap() > 0);

    // an outage: cut long enough for the sampler (every 2 s) to see it
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.cut();
    wait_status(http, connected(false)).await;
    wait_status(http, |s| s["uplink"]["outbox_depth"].as_u64() > Some(40)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    // drained back to what the commit window holds while live (the live
    // readings of one `uplink.buffer.commit_window` and the window in flight)
    wait_status(http, |s| {
        s["uplink"]["connected"] == true && s["uplink"]["outbox_depth"].as_u64() < Some(25)
    })
    .await;
    let hist = poll_json(http, "/api/v1/uplink/history", None, |h| {
        let kinds: Vec<&str> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e[1].as_str())
            .collect();
        kinds.ends_with(&["down", "up"])
    })
    .await;
    let peak = hist["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s[1].as_u64())
        .max()
        .unwrap();
    assert!(peak > 40, "the backlog shows in the samples: {hist}");

    let _one_browser = crate::page::BROWSER.lock().await;
    let mut page = LivePage::open(http, &format!("http://127.0.0.1:{http}/"), "1280,900").await;
    let marks = "(() => { const c = document.getElementById('uplink-chart'); if (!c) return ''; \
                 return c.querySelectorAll('line.ev.down').length + '|' + c.querySelectorAll('line.ev.up').length + '|' + \
                 c.querySelectorAll('rect.outage').length + '|' + c.getAttribute('data-samples'); })()";
    let m = page
        .until(SECS, marks, |s| {
            let v: Vec<u32> = s.split('|').filter_map(|x| x.parse().ok()).collect();
            v.len() == 4 && v[0] >= 1 && v[1] >= 1 && v[2] >= 1 && v[3] >= 3
        })
        .await;
    println!("uplink chart down|up|outages|samples: {m}");
    let level = "(() => { const r = document.querySelector('#clients tr[data-client=\"hmi-panel-31\"] td.level'); return r ? r.textContent : ''; })()";
    assert_eq!(page.until(SECS, level, |s| !s.is_empty()).await, "3.1");
    let level = "(() => { const r = document.querySelector('#clients tr[data-client=\"node-red-311\"] td.level'); return r ? r.textContent : ''; })()";
    assert_eq!(page.until(SECS, level, |s| !s.is_empty()).await, "3.1.1");
    page.until(SECS, &attr("spark-line-temperature", "data-points"), |s| {
        s.parse::<u32>().unwrap_or(0) >= 10
    })
    .await;
    for (w, h) in [(1280, 1500), (390, 1700)] {
        let png = page.screenshot(w, h).await;
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{w} px");
        if let Ok(dir) = std::env::var("FIELDGATE_SCREENSHOTS") {
            let file = std::path::Path::new(&dir).join(format!("status-page-{w}.png"));
            std::fs::write(&file, &png).expect("keep screenshot");
        }
    }
    drop(gw);
}

/// Polls `/api/v1/status` until `ok` holds.
async fn wait_status(http: u16, ok: impl Fn(&Json) -> bool) -> Json {
    poll_json(http, "/api/v1/status", None, ok).await
}

/// Polls `path` every 100 ms until `ok` holds for its document.
pub(crate) async fn poll_json(
    http: u16,
    path: &str,
    basic: Option<&str>,
    ok: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + SECS;
    loop {
        let j = get_json(http, path, basic);
        if ok(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "{path} never matched: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
