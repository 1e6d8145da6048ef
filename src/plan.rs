//! The plan `fieldgate check` prints: what the gateway would do with this
//! config (broker listeners, devices, points and their topics, the uplink,
//! who may write to the plant: `plan/writers.rs`), and the warnings last.
//!
//! Owns the wording of the plan. Must not start anything or touch the network.

mod writers;

use std::fmt::Write;

use crate::rules::{DefaultMapping, Payload};
use crate::settings::Config;
use crate::southbound::kind::PlanContext;

/// Renders the plan as text for a terminal.
pub fn render(config: &Config) -> String {
    let mut s = String::new();
    let gw = &config.gateway.id;
    let _ = writeln!(
        s,
        "gateway {gw} (data in {})",
        config.gateway.data_dir.display()
    );
    broker_lines(&mut s, config);
    let _ = writeln!(s, "status  {gw}/status (retained online/offline)");
    rules_lines(&mut s, config);
    device_lines(&mut s, config);
    match &config.uplink {
        Some(u) => crate::bridge::describe(&mut s, u, gw, &config.gateway.data_dir),
        None => {
            let _ = writeln!(s, "uplink  none (local gateway)");
        }
    }
    if let Some(sp) = &config.sparkplug {
        crate::sparkplug::describe::describe(&mut s, sp, gw, &config.devices);
    }
    let mut warnings = Vec::new();
    payload_warnings(config, &mut warnings);
    writers::describe(&mut s, config, &mut warnings);
    for w in warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// The broker's listeners, who may log in, its limits and its store.
fn broker_lines(s: &mut String, config: &Config) {
    let b = &config.broker;
    let _ = match b.listen {
        Some(plain) => writeln!(s, "broker  mqtt://{plain}"),
        None => writeln!(s, "broker  (plain listener off: listen: null)"),
    };
    if let Some(tls) = &b.tls {
        let _ = writeln!(s, "        mqtts://{}", tls.listen);
    }
    if let Some(ws) = b.websocket {
        let _ = writeln!(s, "        ws://{ws}");
    }
    let mut auth = Vec::new();
    if !b.users.is_empty() {
        auth.push(format!("{} user(s)", b.users.len()));
    }
    if let Some(f) = &b.password_file {
        auth.push(format!("password file {}", f.display()));
    }
    let anonymous = b
        .allow_anonymous
        .unwrap_or(b.users.is_empty() && b.password_file.is_none());
    auth.push(format!(
        "anonymous clients {}",
        if anonymous { "allowed" } else { "refused" }
    ));
    if let Some(acl) = &b.acl {
        auth.push(format!("ACL of {} rule(s)", acl.len()));
    }
    let _ = writeln!(
        s,
        "        {}, max {} connections, max payload {}",
        auth.join(", "),
        b.max_connections,
        b.max_payload
    );
    let sys = if b.sys_interval.get().is_zero() {
        "$SYS off".to_string()
    } else {
        format!("$SYS every {}", b.sys_interval)
    };
    let _ = writeln!(
        s,
        "        {sys}; per session {} messages / {} in memory, {} spooled to {}",
        b.max_queued_messages,
        b.max_queued_bytes,
        b.max_spooled_bytes,
        config.gateway.data_dir.join("broker.db").display()
    );
}

/// The rules: the default mapping or the scripts, and the payload.
fn rules_lines(s: &mut String, config: &Config) {
    let what = if config.rules.scripts.is_empty() {
        "default mapping"
    } else {
        "scripts (each sees every reading, in order); emit(r) uses"
    };
    let _ = writeln!(
        s,
        "rules   {what}: topic {:?}, qos {}, retain {}",
        config.rules.topic,
        config.rules.qos.as_u8(),
        config.rules.retain
    );
    payload_line(s, config);
    for script in &config.rules.scripts {
        let _ = writeln!(
            s,
            "        script {} (fn on_reading; compiled OK)",
            config.resolve_path(script).display()
        );
    }
}

/// Every device's lines, as its kind words them.
fn device_lines(s: &mut String, config: &Config) {
    let mapping = DefaultMapping::new(&config.gateway.id, &config.rules);
    let _ = writeln!(s, "devices {}", config.devices.len());
    let silent = config.rules.publishes_no_readings();
    let topic = |d: &str, p: &str| {
        if silent {
            "no message (rules.payload: none)".to_string()
        } else {
            mapping.topic(d, p)
        }
    };
    let plan = PlanContext {
        gateway: &config.gateway.id,
        data_dir: &config.gateway.data_dir,
        topic: &topic,
    };
    for dev in &config.devices {
        dev.device().describe(s, &plan);
    }
}

/// The `rules.payload` line: what is published per poll, and where.
fn payload_line(s: &mut String, config: &Config) {
    let r = &config.rules;
    let device_topic = crate::rules::device_template(&r.topic);
    let _ = match r.payload {
        Payload::PerPoint => writeln!(s, "        payload per_point: one message per reading"),
        Payload::PerDevice if r.groups_by_device() => writeln!(
            s,
            "        payload per_device: one message per device per poll on {device_topic:?}, every point in it"
        ),
        Payload::PerDevice => writeln!(
            s,
            "        payload per_device: not applied (rules.scripts are set: emit(r) publishes one message per reading; per_device groups the default mapping only)"
        ),
        Payload::None if r.publishes_no_readings() => writeln!(
            s,
            "        payload none: no message for readings (they go to the Sparkplug node, the status page and /metrics only)"
        ),
        Payload::None => writeln!(
            s,
            "        payload none: not applied (rules.scripts are set: they publish what they emit)"
        ),
    };
}

/// What `rules.payload: per_device` or `none` changes for other sections.
fn payload_warnings(config: &Config, warnings: &mut Vec<String>) {
    let r = &config.rules;
    let scripted = !r.scripts.is_empty();
    let warning = match r.payload {
        Payload::PerPoint => None,
        Payload::PerDevice if scripted => Some(
            "rules.payload: per_device has no effect while rules.scripts are set (scripts publish per reading)",
        ),
        Payload::None if scripted => Some(
            "rules.payload: none has no effect while rules.scripts are set (scripts publish what they emit)",
        ),
        Payload::None if !config.sparkplug.as_ref().is_some_and(|s| s.enabled) => Some(
            "rules.payload: none and no sparkplug (or not enabled): readings are published nowhere (only the status page and /metrics show them)",
        ),
        Payload::PerDevice | Payload::None => None,
    };
    warnings.extend(warning.map(str::to_string));
}
