//! The status page's history API over plain HTTP: a point's window
//! (`raw`, `buckets`, `unit`, a text point's `changes`), the 404s for an
//! unknown device or point, the CSV download, every device's document,
//! the uplink's and the clients', the limits a Modbus device learned, and
//! the login they all ask for.

use rumqttc::QoS;
use serde_json::Value as Json;

use crate::modbus::server::{Registers, TcpServer};
use crate::page::get;
use crate::page_trends::{get_json, poll_json};
use crate::support::{Gateway, Sub, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_api_shapes_404s_csv_and_login() {
    // a Modbus device that refuses reads of more than one register
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[7, 8]));
    regs.lock().max_read = Some(1);
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let http = free_port();
    let users = "  users:\n    - { username: tech, password_env: TRENDS_TEST_PW }";
    let gw = Gateway::start_with_env(
        &format!(
            r#"
gateway:
  id: api-gw
  data_dir: "{{data_dir}}"
broker:
  listen: "127.0.0.1:{{port}}"
http:
  listen: "127.0.0.1:{http}"
{users}
devices:
  - name: line
    kind: simulated
    poll: 200ms
    points:
      - {{ name: speed, signal: ramp, period: 30s, min: 0, max: 1200, unit: rpm }}
      - {{ name: mode, signal: constant, value: auto }}
  - name: plc
    kind: modbus-tcp
    address: "{addr}"
    poll: 200ms
    points:
      - {{ name: a, table: holding, address: 0, type: u16 }}
      - {{ name: b, table: holding, address: 1, type: u16 }}
"#,
            addr = server.addr
        ),
        &[("TRENDS_TEST_PW", "s3cret")],
    );
    let ok = Some("tech:s3cret");
    let paths = [
        "/api/v1/history",
        "/api/v1/devices/line/points/speed/history",
        "/api/v1/devices/line/points/speed/history?format=csv",
        "/api/v1/uplink/history",
        "/api/v1/clients",
    ];
    for path in paths {
        assert!(get(http, path, None).0.contains("401"), "{path}");
    }
    // a wrong password once: five would lock this address out for a minute
    // (broker.login_failures, page::failed_page_logins_lock_the_address_out_of_page_and_broker)
    assert!(get(http, paths[1], Some("tech:no")).0.contains("401"));
    let h = poll_json(http, "/api/v1/devices/line/points/speed/history", ok, |h| {
        h["raw"].as_array().unwrap().len() >= 3
    })
    .await;
    assert_eq!(h["unit"], "rpm");
    for r in h["raw"].as_array().unwrap() {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), 2, "[ts, value]");
        assert!(r[0].is_i64() && r[1].is_number(), "{r:?}");
    }
    let b = h["buckets"].as_array().unwrap();
    assert!(!b.is_empty());
    let first = b[0].as_array().unwrap();
    assert_eq!(first.len(), 4, "[ts, min, avg, max]");
    let (min, avg, max) = (
        first[1].as_f64().unwrap(),
        first[2].as_f64().unwrap(),
        first[3].as_f64().unwrap(),
    );
    assert!(min <= avg && avg <= max, "{first:?}");
    assert_eq!(
        first[0].as_i64().unwrap() % 30_000,
        0,
        "buckets start on 30 s"
    );
    assert_eq!(h["window"]["bucket_s"], 30);
    assert_eq!(h["window"]["span_s"], 3600);
    assert!(h["window"]["since"].as_i64().unwrap() <= first[0].as_i64().unwrap() + 30_000);
    // a text point: its changes
    let t = get_json(http, "/api/v1/devices/line/points/mode/history", ok);
    assert_eq!(t["changes"][0][1], "auto", "{t}");

    for (path, needle) in [
        ("/api/v1/devices/nope/points/speed/history", "nope"),
        ("/api/v1/devices/line/points/nope/history", "nope"),
    ] {
        let (status, headers, body) = get(http, path, ok);
        assert!(status.contains("404"), "{path}: {status}");
        assert!(headers.contains("application/json"), "{headers}");
        let e: Json = serde_json::from_str(&body).expect("JSON error");
        assert!(e["error"].as_str().unwrap().contains(needle), "{e}");
    }

    let (status, headers, csv) = get(http, paths[2], ok);
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/csv"), "{headers}");
    assert!(
        headers.contains("attachment; filename=\"line-speed-history.csv\""),
        "{headers}"
    );
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("ts_ms,time_utc,kind,min,avg,max"));
    assert!(csv.lines().any(|l| l.contains(",bucket,")), "{csv}");
    assert!(
        csv.lines().filter(|l| l.contains(",raw,")).count() >= 3,
        "{csv}"
    );

    let all = get_json(http, "/api/v1/history", ok);
    let line = &all["devices"][0];
    assert_eq!(line["name"], "line");
    assert_eq!(line["poll_s"], 0.2);
    assert!(line["points"]["speed"]["raw"].as_array().unwrap().len() >= 3);
    let trail = line["trail"].as_array().unwrap();
    assert!(
        trail[0][1].as_u64().unwrap() > 0,
        "readings counted: {trail:?}"
    );
    // each bucket: start, readings, not good, ms offline, polls, their ms,
    // requests, failed requests; the Modbus device reports its polls
    let plc = &all["devices"][1];
    assert_eq!(plc["name"], "plc");
    let trail = plc["trail"].as_array().unwrap();
    let sum = |i: usize| -> u64 { trail.iter().map(|b| b[i].as_u64().unwrap()).sum() };
    assert!(sum(4) >= 3, "polls counted: {trail:?}");
    assert!(sum(6) >= sum(4), "every poll makes its requests: {trail:?}");
    assert!(
        sum(7) * 2 < sum(6),
        "a healthy server: most requests answered: {trail:?}"
    );
    assert_eq!(
        get_json(http, "/api/v1/uplink/history", ok),
        serde_json::json!({"configured": false})
    );
    let _sub = Sub::connect(gw.port, &["api-gw/#"], QoS::AtMostOnce).await;
    // the limits a Modbus device taught, as the page shows them
    let plc = poll_json(http, "/api/v1/devices/plc", ok, |d| {
        d["learned"].is_string()
    })
    .await;
    assert!(
        plc["learned"].as_str().unwrap().contains("max 1 register"),
        "{plc}"
    );
    let c = get_json(http, "/api/v1/clients", ok);
    let ids: Vec<&str> = c["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{c}");
}
