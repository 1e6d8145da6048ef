//! The TLS and websocket listeners, each with a real client: rumqttc,
//! mosquitto_pub/sub, and a small websocket client written here (RFC 6455
//! framing, MQTT inside). Authentication is in `auth`.

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw;
use super::{Client, SECS, local_args, mosquitto, opts, yaml};
use crate::support::{Gateway, free_port};

/// A CA and a server certificate for `localhost` signed by it (PEM files).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fieldgate test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("sign server cert");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        crate::support::write_secret(&p, &pem);
        p.to_str().expect("utf-8 path").to_string()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    )
}

#[tokio::test]
async fn tls_listener_serves_mosquitto_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(dir.path());
    let tls_port = free_port();
    let gw = Gateway::start(&yaml(&format!(
        "tls: {{ listen: \"127.0.0.1:{tls_port}\", cert_file: \"{cert}\", key_file: \"{key}\" }}"
    )));
    let tls = tls_port.to_string();
    let common = ["-h", "localhost", "-p", &tls, "--cafile", &ca];
    let mut sub_args: Vec<&str> = common.to_vec();
    sub_args.extend(["-t", "l/tls", "-C", "1", "-W", "10", "-q", "1"]);
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(&sub_args)
        .kill_on_drop(true)
        .output();
    let sub = tokio::spawn(sub);
    // mosquitto_sub may subscribe before or after this publish: retained, it gets it either way
    let mut pub_args: Vec<&str> = common.to_vec();
    pub_args.extend(["-t", "l/tls", "-m", "over-tls", "-q", "1", "-r"]);
    let (ok, _, err) = mosquitto("mosquitto_pub", &pub_args).await;
    assert!(ok, "mosquitto_pub over TLS failed: {err}");
    let out = tokio::time::timeout(SECS, sub)
        .await
        .expect("mosquitto_sub finished")
        .expect("join")
        .expect("run mosquitto_sub");
    assert!(
        out.status.success(),
        "mosquitto_sub over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");

    // a client that does not trust the CA is refused
    let (ok, _, _) = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &tls,
            "--capath",
            "/nonexistent",
            "-t",
            "l/tls",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(!ok, "a TLS client without the CA connected");
    // and the plain listener keeps working beside it
    let _plain = Client::connect(opts("l-plain", gw.port)).await;
}

/// A minimal websocket client: handshake with subprotocol `mqtt`, binary
/// frames out (masked), frames in collected into a byte buffer.
struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    async fn connect(port: u16) -> Ws {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let req = format!(
            "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tokio::time::timeout(SECS, s.read_u8())
                .await
                .expect("handshake answer in time")
                .expect("read handshake");
            head.push(b);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // RFC 6455 sample key -> this accept value
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(head.contains("sec-websocket-protocol: mqtt"), "{head}");
        Ws { s, buf: Vec::new() }
    }

    async fn send(&mut self, data: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x82];
        if data.len() < 126 {
            frame.push(0x80 | data.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&frame).await.expect("write frame");
    }

    async fn read_frame(&mut self) {
        let h = self.s.read_u16().await.expect("frame header");
        let opcode = (h >> 8) & 0x0F;
        let mut len = u64::from(h & 0x7F);
        if len == 126 {
            len = u64::from(self.s.read_u16().await.expect("len16"));
        } else if len == 127 {
            len = self.s.read_u64().await.expect("len64");
        }
        let mut payload = vec![0; len as usize];
        self.s
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        assert!(
            opcode == 0 || opcode == 2,
            "unexpected frame opcode {opcode}"
        );
        self.buf.extend(payload);
    }

    /// The next MQTT packet from the frames: (first byte, body).
    async fn packet(&mut self) -> (u8, Vec<u8>) {
        loop {
            let mut cursor = std::io::Cursor::new(self.buf.clone());
            if let Some(p) = raw::read_packet(&mut cursor).await {
                self.buf.drain(..cursor.position() as usize);
                return p;
            }
            tokio::time::timeout(SECS, self.read_frame())
                .await
                .expect("a websocket frame in time");
        }
    }
}

#[tokio::test]
async fn websocket_listener_carries_mqtt() {
    let ws_port = free_port();
    let gw = Gateway::start(&yaml(&format!("websocket: \"127.0.0.1:{ws_port}\"")));
    let mut ws = Ws::connect(ws_port).await;
    ws.send(&raw::connect("l-ws", true, 30, None, None)).await;
    assert_eq!(ws.packet().await, (0x20, vec![0, 0]), "CONNACK accepted");
    ws.send(&raw::subscribe(1, "l/ws", 1)).await;
    assert_eq!(ws.packet().await, (0x90, vec![0, 1, 1]), "SUBACK QoS 1");

    let port = gw.port.to_string();
    let (ok, _, err) = mosquitto(
        "mosquitto_pub",
        &local_args(&port, &["-q", "1", "-t", "l/ws", "-m", "to-browser"]),
    )
    .await;
    assert!(ok, "{err}");
    let (first, body) = ws.packet().await;
    assert_eq!(first & 0xF0, 0x30, "PUBLISH");
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    assert_eq!(&body[2..2 + tlen], b"l/ws");
    assert_eq!(
        &body[2 + tlen + 2..],
        b"to-browser",
        "QoS 1: packet id, then payload"
    );

    // publish from the websocket side, seen by a TCP subscriber
    let mut sub = crate::support::Sub::connect(gw.port, &["l/ws-up"], QoS::AtMostOnce).await;
    ws.send(&raw::publish("l/ws-up", b"from-browser", 0, false, 0))
        .await;
    assert_eq!(sub.wait_topic("l/ws-up", SECS).await.text(), "from-browser");
}

/// Each TLS handshake runs in its own task with a deadline: a silent
/// client blocks nobody.
#[tokio::test]
async fn a_silent_tcp_client_does_not_block_the_tls_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = tls_files(dir.path());
    let tls_port = free_port();
    let _gw = Gateway::start(&yaml(&format!(
        "tls: {{ listen: \"127.0.0.1:{tls_port}\", cert_file: \"{cert}\", key_file: \"{key}\" }}"
    )));
    let _silent = TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .expect("tcp connect");
    let tls = tls_port.to_string();
    let (ok, _, err) = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &tls,
            "--cafile",
            &ca,
            "-t",
            "l/x",
            "-m",
            "x",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(ok, "a TLS client behind a silent one failed: {err}");
}

/// Each websocket handshake runs in its own task with a deadline.
#[tokio::test]
async fn a_silent_tcp_client_does_not_block_the_websocket_listener() {
    let ws_port = free_port();
    let _gw = Gateway::start(&yaml(&format!("websocket: \"127.0.0.1:{ws_port}\"")));
    let _silent = TcpStream::connect(("127.0.0.1", ws_port))
        .await
        .expect("tcp connect");
    let mut ws = Ws::connect(ws_port).await;
    ws.send(&raw::connect("l-ws-behind", true, 30, None, None))
        .await;
    assert_eq!(ws.packet().await, (0x20, vec![0, 0]), "CONNACK accepted");
}

#[test]
fn an_unreadable_tls_certificate_is_a_config_error_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    crate::support::write_secret(&key, "not a key\n");
    let cfg = crate::support::ConfigDir::new(&crate::support::fill(
        &yaml(&format!(
            "tls: {{ listen: \"127.0.0.1:{}\", cert_file: \"{}\", key_file: \"{}\" }}",
            free_port(),
            cert.display(),
            key.display()
        )),
        free_port(),
        &dir.path().join("data"),
    ));
    let out = std::process::Command::new(crate::support::BIN)
        .args(["run", "-c", cfg.path_str()])
        .output()
        .expect("run fieldgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("broker.tls"), "{stderr}");
    assert!(stderr.contains("server.pem"), "{stderr}");
}
