//! Test support for the bridge: a real upstream mosquitto on a free port
//! (optionally with a TLS listener and a CA made here with rcgen), a TCP
//! proxy the test can cut and restore, and gateway configs with an uplink.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::free_port;

/// A running mosquitto, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    /// The TLS listener's port, when started with [`Mosquitto::start_tls`].
    pub tls_port: Option<u16>,
    pub dir: TempDir,
    child: Child,
}

/// Files of a test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a server certificate for `localhost` / 127.0.0.1 in `dir`.
pub fn make_pki(dir: &std::path::Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-server.pem")),
        key: dir.join(format!("{name}-server.key")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&pki.cert, cert.pem()).expect("write cert");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
    pki
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::launch(free_port(), None)
    }

    /// With a TLS listener too; returns the PKI files (CA, server cert, key).
    pub fn start_tls() -> (Mosquitto, Pki) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), "upstream");
        let m = Self::launch_in(dir, free_port(), Some((free_port(), &pki)), "");
        (m, pki)
    }

    /// Starts (again) on a given port.
    pub fn launch(port: u16, _tls: Option<()>) -> Mosquitto {
        Self::launch_in(tempfile::tempdir().expect("tempdir"), port, None, "")
    }

    /// With extra lines in mosquitto.conf (e.g. `max_packet_size 4096`).
    pub fn start_with(extra_conf: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch_in(dir, free_port(), None, extra_conf)
    }

    fn launch_in(dir: TempDir, port: u16, tls: Option<(u16, &Pki)>, extra: &str) -> Mosquitto {
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        );
        conf.push_str(extra);
        if let Some((tls_port, pki)) = tls {
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                pki.ca.display(),
                pki.cert.display(),
                pki.key.display()
            ));
        }
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let m = Mosquitto {
            port,
            tls_port: tls.map(|t| t.0),
            dir,
            child,
        };
        m.wait_listening(port);
        if let Some(p) = m.tls_port {
            m.wait_listening(p);
        }
        m
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto did not listen on {port}");
    }

    /// Stops it (SIGKILL: an abrupt broker restart loses its in-memory state).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of a port; `cut` closes every connection and
/// refuses new ones until `restore`. It runs on its own thread and runtime,
/// so a test blocked in a synchronous wait does not stall the link.
pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        Self::start_slow(target, Duration::ZERO).await
    }

    /// A proxy that holds every chunk from the gateway for `delay` before
    /// passing it on (a slow uplink); the way back is not slowed.
    pub async fn start_slow(target: u16, delay: Duration) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let (up, up_rx) = watch::channel(true);
        let stop = on_own_thread(async move {
            let listener = TcpListener::from_std(std_listener).expect("tokio listener");
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut rx = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = relay(&mut inbound, &mut outbound, delay) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            stop: Some(stop),
        }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// Runs `serve` on its own thread and runtime, so a test blocked in a
/// synchronous wait does not stall it; it ends when the returned sender
/// is sent to or dropped.
pub fn on_own_thread(
    serve: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            tokio::select! {
                _ = serve => {}
                _ = stop_rx => {}
            }
        });
    });
    stop
}

/// Copies both ways; chunks from `inbound` wait `delay` first.
async fn relay(inbound: &mut TcpStream, outbound: &mut TcpStream, delay: Duration) {
    if delay.is_zero() {
        let _ = tokio::io::copy_bidirectional(inbound, outbound).await;
        return;
    }
    use tokio::io::AsyncReadExt;
    let (mut in_r, mut in_w) = inbound.split();
    let (mut out_r, mut out_w) = outbound.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = in_r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            if out_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = tokio::io::copy(&mut out_r, &mut in_w);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A gateway config with simulated counters and an uplink to `url`.
/// `points` counters at `poll`; `buffer` is inserted under `uplink.buffer`.
pub fn gateway_yaml(url: &str, poll: &str, extra_uplink: &str) -> String {
    gateway_yaml_from(url, poll, 0, "gw1/#", extra_uplink)
}

/// As [`gateway_yaml`], with the counter's `start` and the forward filter.
pub fn gateway_yaml_from(
    url: &str,
    poll: &str,
    start: i64,
    filter: &str,
    extra_uplink: &str,
) -> String {
    format!(
        r#"
gateway:
  id: gw1
  data_dir: "{{data_dir}}"
broker:
  listen: 127.0.0.1:{{port}}
devices:
  - name: dev
    kind: simulated
    poll: {poll}
    points:
      - {{ name: n, signal: counter, start: {start} }}
uplink:
  url: {url}
  client_id: gw1-test
  keep_alive: 5s
  reconnect: {{ min: 100ms, max: 500ms }}
  forward:
    - {{ filter: "{filter}", prefix: "site/", qos: 1 }}
{extra_uplink}
"#
    )
}

/// The counter value of a reading payload.
pub fn counter(m: &crate::support::Msg) -> i64 {
    m.json()["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer value in {}", m.text()))
}
