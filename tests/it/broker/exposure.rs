//! Who may reach and write through the broker, as an operator sets it up:
//! a listener open to the network without users refuses to start unless
//! `allow_anonymous: true` says so; commands on `.../set` go through the
//! ACL like any other publish; an address that fails its logins is
//! refused for a while; a session is not handed to a client of another
//! user; the plain listener can be turned off for a TLS listener that
//! requires client certificates; the websocket listener checks `Origin`
//! and bounds what it reads before CONNECT.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw::{self, ConnectOutcome, Raw};
use super::{SECS, mosquitto, yaml};
use crate::modbus::server::{Registers, TcpServer};
use crate::support::{ConfigDir, Gateway, Sub, fieldgate, free_port};

fn check(yaml: &str) -> (i32, String) {
    let cfg = ConfigDir::new(yaml);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_open_listener_without_users_needs_allow_anonymous_said_explicitly() {
    let open = "gateway: { id: gw-x, data_dir: /tmp/fg-x }\nbroker:\n  listen: 0.0.0.0:1883\ndevices: []\n";
    let (code, text) = check(open);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("broker.listen"), "names the key: {text}");
    assert!(text.contains("line 3"), "names the line: {text}");
    assert!(
        text.contains("allow_anonymous: true"),
        "says the way out: {text}"
    );
    assert!(
        text.contains("mosquitto_passwd"),
        "says how to add a user: {text}"
    );
    let explicit = open.replace("devices", "  allow_anonymous: true\ndevices");
    let (code, text) = check(&explicit);
    assert_eq!(code, 0, "{text}");
    let loopback = open.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(check(&loopback).0, 0, "loopback stays open by default");
}

/// A gateway with a Modbus register `valve/setpoint` that only `operator`
/// may write (ACL), and a `viewer` who may read everything.
async fn acl_gateway(regs: &Registers) -> (Gateway, TcpServer) {
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let yaml = format!(
        "gateway:\n  id: gw-acl\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\n  \
         users: [{{ username: operator, password_env: FG_OP }}, {{ username: viewer, password_env: FG_VIEW }}]\n  \
         acl:\n    - {{ user: operator, read: [\"#\"], write: [\"gw-acl/+/+/set\"] }}\n    - {{ user: viewer, read: [\"#\"] }}\n\
         devices:\n  - name: valve\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 1s\n    points:\n      - {{ name: setpoint, table: holding, address: 0, type: u16, writable: true }}\n",
        server.addr
    );
    let gw = Gateway::start_with_env(&yaml, &[("FG_OP", "op-pw"), ("FG_VIEW", "view-pw")]);
    (gw, server)
}

fn login(id: &str, port: u16, user: &str, pw: &str) -> rumqttc::MqttOptions {
    let mut o = crate::support::options(id, port);
    o.set_credentials(user, pw);
    o
}

#[tokio::test]
async fn a_command_goes_through_the_acl_like_any_publish() {
    let regs = Registers::default();
    regs.unit(1, |b| b.set_holding(0, &[1]));
    let (gw, _server) = acl_gateway(&regs).await;
    let mut viewer = Sub::connect_with(
        login("acl-viewer", gw.port, "viewer", "view-pw"),
        &["gw-acl/#"],
        QoS::AtLeastOnce,
    )
    .await;
    viewer
        .client
        .publish("gw-acl/valve/setpoint/set", QoS::AtLeastOnce, false, "7")
        .await
        .expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Some(m) = viewer
        .try_next(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert!(
            !m.topic.ends_with("/set/result"),
            "a denied command got a result"
        );
    }
    assert_eq!(
        regs.holding(1, 0, 1),
        vec![1],
        "the viewer wrote the register"
    );
    let mut operator = Sub::connect_with(
        login("acl-op", gw.port, "operator", "op-pw"),
        &["gw-acl/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let result = crate::modbus::set(&mut operator, "gw-acl/valve/setpoint", "9").await;
    assert_eq!(result, json!({"ok": true}));
    assert_eq!(regs.holding(1, 0, 1), vec![9]);
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_for_the_period() {
    let gw = Gateway::start_with_env(
        &yaml(
            "users: [{ username: hmi, password_env: FG_HMI }]\nlogin_failures: { max: 3, per: 1m }",
        ),
        &[("FG_HMI", "right")],
    );
    for _ in 0..3 {
        let wrong = raw::connect("guesser", true, 30, Some(("hmi", "wrong")), None);
        assert_eq!(
            raw::connect_raw(gw.port, &wrong).await.1,
            ConnectOutcome::connack(4)
        );
    }
    let right = raw::connect("guesser", true, 30, Some(("hmi", "right")), None);
    assert_eq!(
        raw::connect_raw(gw.port, &right).await.1,
        ConnectOutcome::connack(5),
        "refused without its password being checked"
    );
    gw.wait_log("limit=\"login_failures\"", SECS);
}

#[tokio::test]
async fn a_session_is_not_handed_to_a_client_of_another_user() {
    let gw = Gateway::start_with_env(
        &yaml(
            "users: [{ username: alice, password_env: FG_A }, { username: bob, password_env: FG_B }]",
        ),
        &[("FG_A", "a-pw"), ("FG_B", "b-pw")],
    );
    let as_user =
        |user: &str, pw: &str| raw::connect("shared-id", false, 30, Some((user, pw)), None);
    let (mut alice, _) = Raw::open(gw.port, &as_user("alice", "a-pw")).await;
    assert_eq!(alice.subscribe(1, "private/#", 1).await, 1);
    alice.send(&raw::DISCONNECT).await;
    assert!(raw::closed_within(&mut alice.s, SECS).await);
    let mut p = Raw::open(
        gw.port,
        &raw::connect("p", true, 30, Some(("alice", "a-pw")), None),
    )
    .await
    .0;
    p.send(&raw::publish("private/x", b"for-alice", 1, false, 1))
        .await;
    p.expect(raw::PUBACK, SECS).await;
    let (mut bob, present) = Raw::open(gw.port, &as_user("bob", "b-pw")).await;
    assert!(!present, "bob got alice's session");
    assert!(
        bob.publishes_until_quiet(Duration::from_millis(500))
            .await
            .is_empty()
    );
    // alice's own reconnect after that finds a fresh session too (bob's)
    let (_alice, present) = Raw::open(gw.port, &as_user("alice", "a-pw")).await;
    assert!(!present);
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// both signed by it; also a client certificate from another CA.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    client_cert: String,
    client_key: String,
    stranger_cert: String,
    stranger_key: String,
}

fn pki(dir: &std::path::Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write pem");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p.to_str().expect("utf-8 path").to_string()
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("self-sign");
        (cert.pem(), Issuer::new(params, key))
    };
    let leaf = |name: &str, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        (
            params.signed_by(&key, issuer).expect("sign").pem(),
            key.serialize_pem(),
        )
    };
    let (ca_pem, issuer) = ca("fieldgate test CA");
    let (other_pem, other) = ca("someone else's CA");
    drop(other_pem);
    let (cert, key) = leaf("localhost", &issuer);
    let (client_cert, client_key) = leaf("hmi-1", &issuer);
    let (stranger_cert, stranger_key) = leaf("stranger", &other);
    Pki {
        ca: write("ca.pem", ca_pem),
        cert: write("server.pem", cert),
        key: write("server.key", key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
        stranger_cert: write("stranger.pem", stranger_cert),
        stranger_key: write("stranger.key", stranger_key),
    }
}

#[tokio::test]
async fn tls_only_with_client_certificates_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pki(dir.path());
    let tls_port = free_port();
    let gw = Gateway::start(&format!(
        "gateway:\n  id: gw-tls\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: null\n  \
         tls: {{ listen: \"127.0.0.1:{tls_port}\", cert_file: \"{}\", key_file: \"{}\", require_certificate: true, cafile: \"{}\" }}\n\
         devices: []\n",
        p.cert, p.key, p.ca
    ));
    assert!(
        TcpStream::connect(("127.0.0.1", gw.port)).await.is_err(),
        "listen: null still listens"
    );
    let port = tls_port.to_string();
    let with = |cert: &str, key: &str| -> Vec<String> {
        let mut a = vec![
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &p.ca,
            "-t",
            "t/x",
            "-m",
            "hi",
            "-q",
            "1",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if !cert.is_empty() {
            a.extend(["--cert".into(), cert.into(), "--key".into(), key.into()]);
        }
        a
    };
    for (cert, key, expect) in [
        (p.client_cert.as_str(), p.client_key.as_str(), true),
        ("", "", false),
        (p.stranger_cert.as_str(), p.stranger_key.as_str(), false),
    ] {
        let args = with(cert, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = mosquitto("mosquitto_pub", &args).await;
        assert_eq!(ok, expect, "client certificate {cert:?}: {err}");
    }
}

/// Sends a websocket upgrade with `origin`; the status line's code.
async fn upgrade_with_origin(port: u16, origin: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(SECS, s.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("read status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code")
}

#[tokio::test]
async fn the_websocket_listener_checks_origin_and_bounds_frames() {
    let ws_port = free_port();
    let gw = Gateway::start(&yaml(&format!(
        "websocket: \"127.0.0.1:{ws_port}\"\nmax_payload: 1KiB"
    )));
    let own = format!("http://127.0.0.1:{ws_port}");
    assert_eq!(
        upgrade_with_origin(ws_port, Some(&own)).await,
        101,
        "same host"
    );
    assert_eq!(
        upgrade_with_origin(ws_port, None).await,
        101,
        "not a browser"
    );
    assert_eq!(
        upgrade_with_origin(ws_port, Some("http://evil.example")).await,
        403,
        "a page from another site"
    );
    // a frame announcing 64 MiB before CONNECT: closed, nothing buffered
    let mut s = TcpStream::connect(("127.0.0.1", ws_port))
        .await
        .expect("connect");
    let req = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{ws_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(64u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(vec![0u8; 64 * 1024]);
    let _ = s.write_all(&frame).await;
    assert!(
        raw::closed_within(&mut s, SECS).await,
        "a 64 MiB frame was taken"
    );
    drop(gw);
}

/// Publishes one QoS 1 message with paho-mqtt over `wss://` (websocket
/// over TLS, trusting `ca`); paho's exit status and stderr.
const PAHO_WSS: &str = r#"
import sys, paho.mqtt.client as mqtt
port, ca = int(sys.argv[1]), sys.argv[2]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wss-paho", transport="websockets")
c.tls_set(ca_certs=ca)
c.connect("localhost", port, 30)
c.loop_start()
info = c.publish("wss/x", b"over-wss", qos=1)
info.wait_for_publish(10)
c.disconnect()
c.loop_stop()
sys.exit(0 if info.is_published() else 1)
"#;

#[tokio::test]
async fn the_tls_settings_serve_websocket_clients_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pki(dir.path());
    let wss_port = free_port();
    let gw = Gateway::start(&format!(
        "gateway:\n  id: gw-wss\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\n  \
         tls: {{ listen: \"127.0.0.1:{}\", websocket: \"127.0.0.1:{wss_port}\", cert_file: \"{}\", key_file: \"{}\" }}\n\
         devices: []\n",
        free_port(),
        p.cert,
        p.key
    ));
    let mut sub = Raw::connect(gw.port, "wss-watcher").await;
    assert_eq!(sub.subscribe(1, "wss/#", 1).await, 1);
    let out = tokio::process::Command::new("python3")
        .args(["-c", PAHO_WSS, &wss_port.to_string(), &p.ca])
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "paho over wss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sub.publish_in(SECS).await.payload, b"over-wss");
}
