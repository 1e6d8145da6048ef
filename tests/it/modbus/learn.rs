//! Limits learned per device (issue 15): a device that answers reads of at
//! most 16 registers and has unmapped registers (a hole) in the middle of a
//! block. The gateway learns both from the refused merged read, reads every
//! point, shows what it learned in `/healthz` and `fieldgate check`, keeps
//! it in `data_dir`, and after a restart reads within it from the start.

use std::fmt::Write;

use rumqttc::QoS;
use tokio_modbus::prelude::Request;

use crate::modbus::server::{Registers, TcpServer};
use crate::modbus::{SECS, header, reading};
use crate::support::{Gateway, Sub, fieldgate, free_port};

/// Holding 0..=9 and 12..=59 mapped (10 and 11 are not), reads of 16 at most.
fn device() -> Registers {
    let regs = Registers::default();
    regs.unit(1, |b| {
        b.set_holding(0, &(0..10).map(|i| 1000 + i).collect::<Vec<_>>());
        b.set_holding(12, &(12..60).map(|i| 1000 + i).collect::<Vec<_>>());
    });
    regs.lock().max_read = Some(16);
    regs
}

fn points() -> String {
    let mut s = String::new();
    for a in (0..10).chain(12..60) {
        let _ = write!(
            s,
            "\n      - {{ name: r{a}, table: holding, address: {a}, type: u16 }}"
        );
    }
    s
}

/// The reads the server got since `from`, as `(start, count)`.
fn reads(regs: &Registers, from: usize) -> Vec<(u16, u16)> {
    regs.lock().log[from..]
        .iter()
        .filter_map(|(_, r)| match r {
            Request::ReadHoldingRegisters(a, n) => Some((*a, *n)),
            _ => None,
        })
        .collect()
}

/// A read the device refuses: over 16 registers, or over 10..=11.
fn refused(&(a, n): &(u16, u16)) -> bool {
    n > 16 || (a <= 11 && a + n > 10)
}

#[tokio::test]
async fn a_device_that_takes_16_registers_and_has_a_hole_is_learned_and_remembered() {
    let regs = device();
    let server = TcpServer::start(regs.clone(), "127.0.0.1:0").await;
    let mport = free_port();
    let yaml = format!(
        "{}  - name: meter\n    kind: modbus-tcp\n    address: \"{}\"\n    poll: 200ms\n    \
         timeout: 500ms\n    points:{}\nmetrics:\n  listen: 127.0.0.1:{mport}\n",
        header("gw-learn"),
        server.addr,
        points()
    );
    let mut gw = Gateway::start(&yaml);
    let mut sub = Sub::connect(gw.port, &["gw-learn/meter/#"], QoS::AtMostOnce).await;
    // every point is read, the ones past the hole and past 16 included
    for a in [0u16, 9, 12, 27, 28, 59] {
        let v = reading(&mut sub, &format!("gw-learn/meter/r{a}")).await;
        assert_eq!(v["value"], 1000 + a, "{v}");
    }
    let summary = "max 16 registers per read; hole holding 10..=11";
    gw.wait_log(summary, SECS);
    let (_, body) = crate::ops::http_get(mport, "/healthz");
    let h: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(h["devices"]["meter"]["learned"], summary, "{h}");
    // from then on a cycle is 4 reads, none refused
    let from = regs.lock().log.len();
    reading(&mut sub, "gw-learn/meter/r59").await;
    reading(&mut sub, "gw-learn/meter/r59").await;
    let later = reads(&regs, from);
    assert!(!later.iter().any(refused), "{later:?}");
    assert!(
        later.contains(&(0, 10)) && later.contains(&(12, 16)),
        "{later:?}"
    );
    assert!(gw.terminate(SECS).success());

    // fieldgate check shows it; a restart reads within it from the start
    let out = fieldgate(&["check", "-c", gw.cfg.path_str()]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&format!("modbus-learned.json): {summary}")),
        "{plan}"
    );
    assert!(plan.contains("requests per poll: 4"), "{plan}");
    let from = regs.lock().log.len();
    let port = gw.port;
    let cfg = std::mem::replace(&mut gw.cfg, crate::support::ConfigDir::new(""));
    drop(gw);
    let gw = Gateway::spawn(cfg, port, &[]);
    let mut sub = Sub::connect(gw.port, &["gw-learn/meter/#"], QoS::AtMostOnce).await;
    reading(&mut sub, "gw-learn/meter/r59").await;
    let after = reads(&regs, from);
    assert!(!after.is_empty() && !after.iter().any(refused), "{after:?}");
}
