//! The two broker processes under test, their resident memory and idle
//! connections to them.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A broker process under test; killed on drop.
pub struct BrokerProc {
    pub name: &'static str,
    child: Child,
    pub port: u16,
}

impl BrokerProc {
    /// VmRSS of the broker process in KiB (0 if it cannot be read).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// RssAnon (heap, stacks: resident memory without the mapped program
    /// and library files) in KiB.
    pub fn anon_kib(&self) -> u64 {
        self.status_kib("RssAnon:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Panics if the broker died during the run (its numbers would be void).
    pub fn check_alive(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!("{} exited during the benchmark: {s}", self.name);
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, mut cmd: Command, port: u16) -> BrokerProc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e} (apt-get install mosquitto)"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name} exited early: {s}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return BrokerProc { name, child, port };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The release fieldgate binary with no devices, data_dir under `dir`.
pub fn start_fieldgate(dir: &Path) -> BrokerProc {
    let port = free_port();
    let cfg = dir.join("fieldgate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  id: bench\n  data_dir: \"{}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\n  max_connections: 1000\ndevices: []\n",
            dir.join("data").display()
        ),
    )
    .expect("write fieldgate config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldgate"));
    cmd.args(["run", "-c"]).arg(&cfg).env("RUST_LOG", "warn");
    spawn("fieldgate", cmd, port)
}

pub fn start_mosquitto(dir: &Path) -> BrokerProc {
    let port = free_port();
    let cfg = dir.join("mosquitto.conf");
    std::fs::write(
        &cfg,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000\n"
        ),
    )
    .expect("write mosquitto config");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&cfg);
    spawn("mosquitto", cmd, port)
}

/// "mosquitto version 2.0.11" (first line of `mosquitto -h`).
pub fn mosquitto_version() -> String {
    let out = Command::new("mosquitto")
        .arg("-h")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("mosquitto")
        .to_string()
}

/// Opens `n` idle MQTT 3.1.1 connections (raw CONNECT, CONNACK read, 60 s
/// keep-alive) and returns them; each step bounded by 10 s.
pub async fn idle_connections(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    let step = Duration::from_secs(10);
    let mut out = Vec::new();
    for i in 0..n {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let mut s = tokio::time::timeout(step, connect)
            .await
            .expect("connect in time")
            .expect("connect");
        let id = format!("idle-{i:04}");
        let mut pkt = vec![0x10, (12 + id.len()) as u8, 0, 4];
        pkt.extend_from_slice(b"MQTT");
        pkt.extend_from_slice(&[4, 2, 0, 60]);
        pkt.extend_from_slice(&(id.len() as u16).to_be_bytes());
        pkt.extend_from_slice(id.as_bytes());
        s.write_all(&pkt).await.expect("CONNECT");
        let mut ack = [0u8; 4];
        tokio::time::timeout(step, s.read_exact(&mut ack))
            .await
            .expect("CONNACK in time")
            .expect("CONNACK");
        assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
        out.push(s);
    }
    out
}
