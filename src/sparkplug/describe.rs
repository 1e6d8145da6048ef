//! The Sparkplug part of the plan `fieldgate check` prints: the node's
//! topics, each device's topics and its metrics (name, alias, datatype,
//! unit, scale, writable).
//!
//! Owns that wording. Must not start anything.

use std::fmt::Write;

use super::config::{SparkplugConfig, Target};
use super::model::{self, REBIRTH, REBIRTH_ALIAS};
use super::topics::{Ids, state_topic};
use crate::southbound::devices::DeviceConfig;

/// Appends the Sparkplug plan to `s`.
pub fn describe(s: &mut String, cfg: &SparkplugConfig, gateway: &str, devices: &[DeviceConfig]) {
    if !cfg.enabled {
        let _ = writeln!(s, "sparkplug  off (enabled: false)");
        return;
    }
    let ids = Ids {
        group: cfg.group_id.clone(),
        node: cfg.node_id(gateway).to_string(),
    };
    let target = match cfg.target {
        Target::Local => "the embedded broker",
        Target::Uplink => "the uplink",
    };
    let _ = writeln!(
        s,
        "sparkplug  group {:?}, edge node {:?}, on {target}; report by exception {}, deadband {}",
        ids.group,
        ids.node,
        if cfg.report_by_exception { "on" } else { "off" },
        cfg.deadband.map_or("none".to_string(), |d| d.to_string()),
    );
    match &cfg.primary_host_id {
        Some(h) => {
            let _ = writeln!(
                s,
                "           births wait for {} online; while it is offline DDATA is stored (at most {}, then the oldest go) and sent after the births as history ({} metrics/s, {} per message)",
                state_topic(h),
                cfg.history_max_rows,
                cfg.history_rate,
                cfg.history_batch
            );
        }
        None => {
            let _ = writeln!(s, "           no primary host: births at start");
        }
    }
    let _ = writeln!(
        s,
        "           {} (bdSeq, {REBIRTH:?} alias {REBIRTH_ALIAS}), {}, {}",
        ids.node_topic("NBIRTH"),
        ids.node_topic("NDEATH"),
        ids.node_topic("NCMD")
    );
    for d in model::build(devices) {
        let _ = writeln!(
            s,
            "  device {}: {} (DBIRTH, DDATA, DDEATH; DCMD)",
            d.name,
            ids.device_topic("{DBIRTH,DDATA,DDEATH,DCMD}", &d.name)
        );
        for m in &d.metrics {
            let unit = m
                .unit
                .as_deref()
                .map(|u| format!(" [{u}]"))
                .unwrap_or_default();
            let scale = m.scale.map(|x| format!(" scale {x}")).unwrap_or_default();
            let writable = if m.writable { " writable" } else { "" };
            let _ = writeln!(
                s,
                "    {:<16} alias {:<4} {:?}{unit}{scale}{writable}",
                m.name, m.alias, m.datatype
            );
        }
    }
}
