//! A broken or unopenable outbox file: the gateway starts anyway. A
//! corrupt `outbox.db` is set aside and a fresh one used; an unusable
//! `data_dir` keeps local operation going with forwarding off. Both say so
//! in the log, `/healthz`, `/metrics` and the systemd STATUS line.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use rumqttc::QoS;

use crate::bridge::{SECS, wait_reading};
use crate::support::{ConfigDir, Gateway, Sub, fill, free_port};
use crate::upstream::{Mosquitto, gateway_yaml};

/// Starts `yaml` plus a metrics listener on `mport`, with the data_dir
/// that `data` prepares in the config's folder and a systemd notify socket.
fn start(
    yaml: &str,
    mport: u16,
    data: impl Fn(&Path) -> std::path::PathBuf,
) -> (Gateway, UnixDatagram, tempfile::TempDir) {
    let yaml = format!("{yaml}metrics:\n  listen: 127.0.0.1:{mport}\n");
    let cfg = ConfigDir::new("");
    let data_dir = data(cfg.dir.path());
    let port = free_port();
    std::fs::write(&cfg.path, fill(&yaml, port, &data_dir)).expect("write config");
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let gw = Gateway::spawn(
        cfg,
        port,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    (gw, sock, sock_dir)
}

fn healthz(mport: u16) -> serde_json::Value {
    let (_, body) = crate::ops::http_get(mport, "/healthz");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn metric(mport: u16, name: &str) -> i64 {
    let (_, text) = crate::ops::http_get(mport, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test]
async fn a_corrupt_outbox_is_set_aside_and_forwarding_goes_on() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mport = free_port();
    let garbage = "this is not an SQLite database\n".repeat(400);
    let (mut gw, sock, _s) = start(&gateway_yaml(&url, "100ms", ""), mport, |dir| {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join("outbox.db"), &garbage).expect("write garbage");
        data
    });
    // forwarding works on the fresh outbox
    wait_reading(&mut up).await;
    let data = gw.cfg.dir.path().join("data");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .expect("read data_dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one file set aside");
    assert_eq!(
        std::fs::read_to_string(aside[0].path()).expect("read"),
        garbage,
        "the broken file is kept as it was"
    );
    let h = healthz(mport);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["outbox"]
            .as_str()
            .is_some_and(|s| s.contains("set aside")),
        "{h}"
    );
    assert_eq!(metric(mport, "fieldgate_outbox_set_aside_total"), 1);
    let mut seen = Vec::new();
    crate::ops::wait_datagram(&sock, &mut seen, SECS, |m| {
        m.contains("STATUS=") && m.contains("broken outbox set aside")
    });
    assert!(
        gw.log_text().contains("outbox file was broken"),
        "{}",
        gw.log_text()
    );
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn an_unusable_data_dir_keeps_local_operation_and_says_forwarding_is_off() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mport = free_port();
    // a data_dir below a regular file can never be created (even as root)
    let (mut gw, sock, _s) = start(&gateway_yaml(&url, "100ms", ""), mport, |dir| {
        std::fs::write(dir.join("file"), "").expect("write");
        dir.join("file").join("data")
    });
    let mut local = Sub::connect(gw.port, &["gw1/dev/#"], QoS::AtLeastOnce).await;
    local.wait_topic("gw1/dev/n", SECS).await;
    let h = healthz(mport);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["outbox"]
            .as_str()
            .is_some_and(|s| s.contains("uplink off")),
        "{h}"
    );
    let mut seen = Vec::new();
    crate::ops::wait_datagram(&sock, &mut seen, SECS, |m| {
        m.contains("STATUS=") && m.contains("uplink off")
    });
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn an_outbox_of_the_previous_version_is_migrated_and_drained() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/hmi/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mport = free_port();
    // the schema before `attempts` and `dead`, with three waiting rows
    let (mut gw, _sock, _s) = start(&gateway_yaml(&url, "1h", ""), mport, |dir| {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let script = "import sqlite3, sys\n\
            c = sqlite3.connect(sys.argv[1])\n\
            c.execute('CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, \
            payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, \
            created_ms INTEGER NOT NULL, size INTEGER NOT NULL)')\n\
            import time\n\
            for i in range(3):\n    \
            c.execute('INSERT INTO outbox (topic, payload, qos, retain, created_ms, size) VALUES (?,?,1,0,?,?)', \
            ('site/gw1/hmi/old', b'old-%d' % i, int(time.time()*1000), 22))\n\
            c.commit()\n";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(data.join("outbox.db"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    });
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = up.wait_topic("site/gw1/hmi/old", SECS).await;
        got.push(m.text());
    }
    assert_eq!(got, vec!["old-0", "old-1", "old-2"]);
    assert_eq!(healthz(mport)["outbox"], "ok");
    assert!(gw.terminate(SECS).success());
}

/// A tmpfs of `size` mounted at `dir` (the test runs as root, as `.ci/run`
/// does), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

/// `/healthz` until `pred` holds for (status line, JSON body).
fn wait_healthz(mport: u16, pred: impl Fn(&str, &serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + SECS;
    loop {
        let (status, body) = crate::ops::http_get(mport, "/healthz");
        let h: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        if pred(&status, &h) {
            return h;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {h}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_full_disk_is_a_503_in_healthz_and_said_in_the_status_line_until_it_has_room() {
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mport = free_port();
    let mount = std::sync::Mutex::new(None);
    let (mut gw, sock, _s) = start(&gateway_yaml(&url, "5ms", ""), mport, |dir| {
        let data = dir.join("data");
        *mount.lock().expect("lock") = Some(SmallDisk::mount(&data, "8m"));
        data
    });
    let _disk = mount.lock().expect("lock").take();
    let data = gw.cfg.dir.path().join("data");
    wait_healthz(mport, |status, _| status.contains("200"));
    // something else fills the card
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        while f.write_all(&[0u8; 64 * 1024]).is_ok() {}
        let _ = f.flush();
    }
    let h = wait_healthz(mport, |status, _| status.contains("503"));
    assert!(
        h["disk"].as_str().is_some_and(|d| d.contains("disk full")),
        "{h}"
    );
    assert_eq!(h["status"], "degraded", "{h}");
    // the status page's uplink card says it too
    let (_, body) = crate::ops::http_get(mport, "/api/v1/status");
    let s: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert!(
        s["uplink"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("disk full")),
        "{s}"
    );
    let mut seen = Vec::new();
    crate::ops::wait_datagram(&sock, &mut seen, SECS, |m| {
        m.contains("STATUS=") && m.contains("disk full")
    });
    // room again: the next commit succeeds and the problem is over
    std::fs::remove_file(&filler).expect("remove filler");
    let h = wait_healthz(mport, |status, _| status.contains("200"));
    assert_eq!(h["disk"], "ok", "{h}");
    assert!(
        gw.log_text().contains("commits succeed again"),
        "{}",
        gw.log_text()
    );
    assert!(gw.terminate(SECS).success());
}
