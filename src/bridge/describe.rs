//! The uplink part of the plan `fieldgate check` prints: where messages go
//! upstream, which are buffered, what comes back down, and the outbox limits.
//!
//! Owns that wording. Must not open the outbox or touch the network.

use std::fmt::Write;
use std::path::Path;

use super::config::{Drain, Protocol, Synchronous, UplinkConfig, WhenFull};

/// Appends the uplink plan to `s`.
pub fn describe(s: &mut String, cfg: &UplinkConfig, gateway: &str, data_dir: &Path) {
    let _ = writeln!(
        s,
        "uplink  {} as client {:?} (session kept), keep-alive {}, in-flight window {}",
        cfg.url,
        cfg.client_id(gateway),
        cfg.keep_alive,
        cfg.inflight
    );
    let _ = writeln!(
        s,
        "        packets up to {}; a message that does not fit, or is the oldest unacknowledged at {} dropped connections, goes to the dead-letter table",
        cfg.max_packet_size, cfg.max_attempts
    );
    let _ = writeln!(
        s,
        "        status {} = online on connect, offline on stop and as last will (retained)",
        cfg.status_topic(gateway)
    );
    describe_protocol(s, cfg);
    for r in &cfg.forward {
        let how = if r.qos.as_u8() == 0 {
            "live only, never buffered"
        } else {
            "buffered in the outbox"
        };
        let expiry = match (cfg.protocol, r.message_expiry) {
            (Protocol::V5, Some(e)) => format!(", message expiry {e} (what is left is sent)"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "        forward  {} -> {}{} qos {} ({how}{expiry})",
            r.filter,
            r.prefix,
            r.filter,
            r.qos.as_u8()
        );
    }
    for c in &cfg.commands {
        let _ = writeln!(
            s,
            "        command  {} -> local topic without {:?}, qos {}",
            c.filter,
            c.strip_prefix,
            c.qos.as_u8()
        );
    }
    let b = &cfg.buffer;
    let _ = writeln!(
        s,
        "        outbox {}: at most {} messages, {}, max age {}; when full {}; drain {}; synchronous {}",
        super::outbox::db_path(data_dir).display(),
        b.max_messages,
        b.max_bytes,
        b.max_age,
        match b.when_full {
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::DropNewest => "drop_newest",
        },
        match b.drain {
            Drain::Fifo => "fifo",
            Drain::LiveFirst => "live_first",
        },
        match b.synchronous {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    );
    let own = match b.write_behind {
        Some(w) => format!(
            "write-behind {w}: own messages in memory, written only if not acknowledged by then"
        ),
        None => "own messages committed first".to_string(),
    };
    let rate = cfg
        .drain_rate
        .map_or("unlimited".to_string(), |r| format!("{r} messages/s"));
    let r = &cfg.reconnect;
    let _ = writeln!(
        s,
        "        commit window {}; {own}; drain rate {rate}; reconnect full jitter {} to {}, reset after {} up",
        b.commit_window, r.min, r.max, r.stable
    );
}

/// The protocol line: MQTT 5's session expiry and what the broker's
/// CONNACK may still lower (known only once connected: said in the log).
fn describe_protocol(s: &mut String, cfg: &UplinkConfig) {
    match cfg.protocol {
        Protocol::V311 => {
            let _ = writeln!(s, "        MQTT 3.1.1");
        }
        Protocol::V5 => {
            let replay = if cfg.backfill_properties {
                "messages sent after they waited carry fieldgate-replay / fieldgate-ts"
            } else {
                "no replay properties"
            };
            let _ = writeln!(
                s,
                "        MQTT 5, session expiry {}; {replay}; the broker's Receive Maximum, \
                 Maximum Packet Size, Maximum QoS and Retain Available apply once connected \
                 (logged)",
                cfg.session_expiry
            );
            if cfg.forward.iter().any(|r| r.qos.as_u8() == 2) {
                let _ = writeln!(
                    s,
                    "        note: QoS 2 entries go at QoS 1 to brokers whose Maximum QoS is 1 \
                     (AWS IoT Core, Azure IoT Hub)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_every_rule_and_the_limits() {
        let cfg: UplinkConfig = serde_yaml_ng::from_str(
            "url: mqtt://up:1883\nforward:\n  - { filter: \"gw/#\", prefix: \"site/\", qos: 1 }\n  - { filter: \"gw/fast/#\", qos: 0 }\n\
             commands:\n  - { filter: \"site/gw/+/set\", strip_prefix: \"site/\" }\nbuffer: { max_messages: 500, drain: live_first, write_behind: 2s }\ndrain_rate: 100\n",
        )
        .expect("yaml");
        let mut s = String::new();
        describe(&mut s, &cfg, "gw", Path::new("/var/lib/fieldgate"));
        for want in [
            "uplink  mqtt://up:1883 as client \"gw\"",
            "status site/gw/status",
            "forward  gw/# -> site/gw/# qos 1 (buffered in the outbox)",
            "forward  gw/fast/# -> gw/fast/# qos 0 (live only",
            "command  site/gw/+/set -> local topic without \"site/\"",
            "outbox /var/lib/fieldgate/outbox.db: at most 500 messages",
            "drain live_first",
            "packets up to 1.0 MiB",
            "at 5 dropped connections, goes to the dead-letter table",
            "commit window 500ms; write-behind 2s",
            "drain rate 100 messages/s",
            "reconnect full jitter 1s to 2m, reset after 30s up",
        ] {
            assert!(s.contains(want), "{want:?} missing in:\n{s}");
        }
    }
}
