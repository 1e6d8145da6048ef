//! Semantic checks that serde cannot express: names, uniqueness, topic
//! templates, secrets that must resolve. Every problem is reported, not just
//! the first.
//!
//! Owns cross-field and cross-section rules. Checks that concern one device
//! kind live in that adapter's `validate`; this module only calls them.

use std::collections::HashMap;

use super::types::is_valid_name;
use super::{Config, DeviceConfig, Report};

/// Placeholders allowed in `rules.topic`.
pub const TOPIC_PLACEHOLDERS: &[&str] = &["gateway", "device", "point"];

/// `positions[i]` is the index in the YAML list of `config.devices[i]`.
pub(super) fn check(config: &Config, positions: &[usize], report: &mut Report) {
    if !is_valid_name(&config.gateway.id) {
        report.add(
            "gateway.id",
            format!(
                "{:?} is not a valid id: use letters, digits, `_` and `-` only",
                config.gateway.id
            ),
        );
    }

    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut rtu = Vec::new();
    let mut rtu_tcp = Vec::new();
    for (&i, dev) in positions.iter().zip(&config.devices) {
        let path = format!("devices[{i}]");
        let name = dev.name();
        if !is_valid_name(name) {
            report.add(
                format!("{path}.name"),
                format!(
                    "{name:?} is not a valid device name: use letters, digits, `_` and `-` only"
                ),
            );
        } else if name == "status" {
            report.add(
                format!("{path}.name"),
                "`status` is reserved for status topics",
            );
        }
        if let Some(first) = seen.insert(name, i) {
            report.add(
                format!("{path}.name"),
                format!("duplicate device name {name:?} (also devices[{first}])"),
            );
        }
        match dev {
            DeviceConfig::Simulated(c) => c.validate(&path, report),
            DeviceConfig::ModbusTcp(c) => c.validate(&path, report),
            DeviceConfig::ModbusRtu(c) => {
                c.validate(&path, report);
                rtu.push((path.clone(), c));
            }
            DeviceConfig::ModbusRtuTcp(c) => {
                c.validate(&path, report);
                rtu_tcp.push((path.clone(), c));
            }
            DeviceConfig::Serial(c) => c.validate(config, &path, report),
        }
    }

    crate::southbound::modbus::validate_buses(&rtu, report);
    crate::southbound::modbus::validate_tcp_buses(&rtu_tcp, report);

    check_topic_template(&config.rules.topic, "rules.topic", report);
    config.broker.validate("broker", report);
    config.rules.validate(config, "rules", report);
    if let Some(uplink) = &config.uplink {
        uplink.validate("uplink", report);
    }
}

/// Checks the point names of the device at `path`: valid characters and
/// unique within the device (`{path}.points[i].name` in messages).
pub(crate) fn check_point_names<'a>(
    path: &str,
    names: impl IntoIterator<Item = &'a str>,
    report: &mut Report,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let at = format!("{path}.points[{i}].name");
        if !is_valid_name(name) {
            report.add(
                at.clone(),
                format!(
                    "{name:?} is not a valid point name: use letters, digits, `_` and `-` only"
                ),
            );
        }
        if !seen.insert(name) {
            report.add(at, format!("duplicate point name {name:?}"));
        }
    }
}

/// Checks a topic template: known `{placeholders}`, no MQTT wildcards, not empty.
pub(crate) fn check_topic_template(template: &str, path: &str, report: &mut Report) {
    if template.is_empty() {
        report.add(path, "the topic template is empty");
        return;
    }
    if template.contains(['+', '#']) {
        report.add(
            path,
            "a topic to publish on cannot contain the wildcards `+` or `#`",
        );
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            report.add(path, "unclosed `{` in the topic template");
            return;
        };
        let name = &after[..close];
        if !TOPIC_PLACEHOLDERS.contains(&name) {
            report.add(
                path,
                format!(
                    "unknown placeholder {{{name}}}; available: {}",
                    TOPIC_PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        rest = &after[close + 1..];
    }
}
