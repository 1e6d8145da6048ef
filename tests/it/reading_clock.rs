//! Readings taken before NTP set the clock are flagged (issue 13, item 4):
//! the default payload says `"clock": "unsynced"` exactly while the kernel
//! says the clock is not synchronised, and never with
//! `gateway.clock_check: off`. The kernel's answer is read here with
//! Python's ctypes (`adjtimex(2)` returns 5, TIME_ERROR, while
//! unsynchronised), independently of the gateway's own check.

use rumqttc::QoS;

use crate::modbus::SECS;
use crate::support::{Gateway, Sub};

/// What the kernel says now: `true` when the clock is synchronised.
fn kernel_synced() -> bool {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import ctypes, ctypes.util\n\
             libc = ctypes.CDLL(ctypes.util.find_library('c'))\n\
             buf = ctypes.create_string_buffer(512)\n\
             print(libc.adjtimex(buf))",
        ])
        .output()
        .expect("python3");
    let state: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("adjtimex state");
    state != 5
}

fn yaml(extra: &str) -> String {
    format!(
        "gateway:\n  id: gw-clock\n  data_dir: \"{{data_dir}}\"\n{extra}broker:\n  listen: \
         \"127.0.0.1:{{port}}\"\ndevices:\n  - name: dev\n    kind: simulated\n    poll: 50ms\n    \
         points:\n      - {{ name: n, signal: counter }}\n"
    )
}

#[tokio::test]
async fn readings_say_when_the_clock_is_not_synchronised() {
    let gw = Gateway::start(&yaml(""));
    let mut sub = Sub::connect(gw.port, &["gw-clock/dev/n"], QoS::AtMostOnce).await;
    let before = kernel_synced();
    let m = sub.wait_topic("gw-clock/dev/n", SECS).await.json();
    let after = kernel_synced();
    assert_eq!(
        before, after,
        "the kernel's clock state changed during the test"
    );
    if before {
        assert!(m.get("clock").is_none(), "synchronised, yet flagged: {m}");
    } else {
        assert_eq!(m["clock"], "unsynced", "{m}");
    }
    assert!(m["ts"].is_i64(), "ts is kept as the clock gave it: {m}");

    let gw = Gateway::start(&yaml("  clock_check: off\n"));
    let mut sub = Sub::connect(gw.port, &["gw-clock/dev/n"], QoS::AtMostOnce).await;
    let m = sub.wait_topic("gw-clock/dev/n", SECS).await.json();
    assert!(
        m.get("clock").is_none(),
        "clock_check: off, yet flagged: {m}"
    );
}
