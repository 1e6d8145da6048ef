//! Shared test support: the real `fieldgate` binary on a temporary config,
//! free ports; the real MQTT client that collects messages is in `sub.rs`.
//!
//! Everything waits on events (a message, a listening port, a process exit)
//! with a deadline; nothing sleeps to synchronise.

#![allow(dead_code)]

mod sub;
pub use sub::{Msg, Sub, options};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fieldgate");

/// A TCP port that was free a moment ago, never handed out twice in this
/// test process.
///
/// Binding port 0 and releasing it is not enough: the kernel may hand the
/// same ephemeral port to the next `bind(0)` (CI once gave the broker and the
/// metrics endpoint of one gateway the same port) or to an outgoing
/// connection. So ports come from a counter walking the range just below the
/// kernel's ephemeral range (`ip_local_port_range`), which neither `bind(0)`
/// nor `connect()` uses, and each candidate is checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = 8000.min(low.saturating_sub(1100));
    let base = low - span;
    // start somewhere that depends on the process, so two test processes
    // running at once are unlikely to walk the same ports
    let start = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(base + (start + n) % span).expect("port fits u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + span);
}

/// Runs `fieldgate ARGS` to completion.
pub fn fieldgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run fieldgate")
}

/// Writes a secret file (a password, a password file, a private key) the
/// way it must be on a real box: mode 0600, or the gateway refuses it.
pub fn write_secret(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).expect("write secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// A temporary directory holding a config file.
pub struct ConfigDir {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl ConfigDir {
    /// Writes `yaml` as `fieldgate.yaml` in a fresh temporary directory.
    pub fn new(yaml: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fieldgate.yaml");
        std::fs::write(&path, yaml).expect("write config");
        ConfigDir { dir, path }
    }

    /// Writes another file beside the config.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write file");
        p
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

/// A running `fieldgate run` process. Killed on drop.
pub struct Gateway {
    pub child: Child,
    pub cfg: ConfigDir,
    /// The embedded broker's port.
    pub port: u16,
    pub log: PathBuf,
}

/// Returns `yaml` with `{port}` and `{data_dir}` filled in.
pub fn fill(yaml: &str, port: u16, data_dir: &Path) -> String {
    yaml.replace("{port}", &port.to_string())
        .replace("{data_dir}", data_dir.to_str().expect("utf-8 path"))
}

impl Gateway {
    /// Starts the real binary on `yaml` (with `{port}` = a free port and
    /// `{data_dir}` = a temporary directory) and waits until its broker listens.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let cfg = ConfigDir::new("");
        let data = cfg.dir.path().join("data");
        std::fs::write(&cfg.path, fill(yaml, port, &data)).expect("write config");
        Self::spawn(cfg, port, env)
    }

    /// Starts the binary on an existing config directory (for restarts).
    pub fn spawn(cfg: ConfigDir, port: u16, env: &[(&str, &str)]) -> Gateway {
        let log = cfg
            .dir
            .path()
            .join(format!("fieldgate-{}.log", std::process::id()));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "-c", cfg.path_str()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // a restart appends to the same log: wait for this run's line
        let before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let child = cmd.spawn().expect("spawn fieldgate");
        let mut gw = Gateway {
            child,
            cfg,
            port,
            log,
        };
        gw.wait_listening(Duration::from_secs(20), before);
        gw
    }

    fn wait_listening(&mut self, within: Duration, from: usize) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "fieldgate exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if self
                .log_text()
                .get(from..)
                .is_some_and(|t| t.contains("fieldgate running"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "fieldgate did not start within {within:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `within`) until the log contains `needle`; returns
    /// the log. The log is a file the gateway appends to: it is read again
    /// every 20 ms.
    pub fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("send signal");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(within)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL (no shutdown at all), then the same binary again on the same
    /// config, data directory and port.
    pub fn sigkill_and_restart(mut self, env: &[(&str, &str)]) -> Gateway {
        self.kill();
        let cfg = std::mem::replace(&mut self.cfg, ConfigDir::new(""));
        let port = self.port;
        drop(self);
        Gateway::spawn(cfg, port, env)
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "fieldgate did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
