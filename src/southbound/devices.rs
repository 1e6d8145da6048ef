//! The `devices:` list: tells device kinds apart by `kind`, hands each
//! entry to its kind, and runs the checks across devices (names,
//! uniqueness, and each kind's checks across its devices, such as RTU
//! buses).
//!
//! Owns the list of kinds this build knows ([`KINDS`]): adding a kind is
//! its folder and one line there. Must not validate a kind's own fields
//! (the kinds do that).

use serde_yaml_ng::Value;

use std::collections::HashMap;
use std::path::Path;

use super::kind::{Device, Kind};
use super::{modbus, serial, simulated};
use crate::config::{Report, is_valid_name};

/// The device kinds this build accepts, in the order `kind:` lists them.
pub(crate) static KINDS: &[&dyn Kind] = &[
    &simulated::KIND,
    &modbus::TCP_KIND,
    &modbus::RTU_KIND,
    &modbus::RTU_TCP_KIND,
    &serial::KIND,
];

/// Kinds that the design names but this build does not have yet.
const PLANNED_KINDS: &[&str] = &[];

/// `simulated, modbus-tcp, ...`: the kinds for messages.
fn kind_names() -> String {
    KINDS
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of `devices:`: a device of one of the [`KINDS`].
#[derive(Debug)]
pub struct DeviceConfig {
    kind: &'static str,
    device: Box<dyn Device>,
}

impl Clone for DeviceConfig {
    fn clone(&self) -> Self {
        DeviceConfig {
            kind: self.kind,
            device: self.device.clone_device(),
        }
    }
}

impl DeviceConfig {
    /// The word in `kind:`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The kind's device.
    pub(crate) fn device(&self) -> &dyn Device {
        &*self.device
    }

    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The writable points and the limits the commands task checks
    /// their writes against.
    pub fn write_limits(&self) -> Vec<(&str, super::guard::WriteLimits)> {
        self.device.write_limits()
    }
}

/// The devices of `devices` whose kind is `kind`, each with its index.
fn of_kind<'a>(
    devices: &'a [DeviceConfig],
    kind: &'a dyn Kind,
) -> impl Iterator<Item = (usize, &'a dyn Device)> {
    devices
        .iter()
        .enumerate()
        .filter(move |(_, d)| d.kind == kind.name())
        .map(|(i, d)| (i, d.device()))
}

/// The sources for `devices`, kind by kind, with the command queues of
/// sources that accept writes registered in `routes`.
pub(crate) fn sources(
    devices: &[DeviceConfig],
    routes: &mut super::commands::Routes,
) -> Vec<Box<dyn super::Source>> {
    KINDS
        .iter()
        .flat_map(|k| {
            let mine: Vec<&dyn Device> = of_kind(devices, *k).map(|(_, d)| d).collect();
            k.sources(&mine, routes)
        })
        .collect()
}

/// Parses every device entry; problems go to `report`, bad entries are skipped.
/// Returns the devices that parsed, each with its index in the YAML list (so
/// later messages name the right `devices[i]` when an earlier entry failed).
pub(crate) fn parse_all(values: Vec<Value>, report: &mut Report) -> Vec<(usize, DeviceConfig)> {
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let path = format!("devices[{i}]");
        let Value::Mapping(mut map) = value else {
            report.add(
                path,
                "a device must be a mapping with at least `name` and `kind`",
            );
            continue;
        };
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => {
                report.add(
                    format!("{path}.kind"),
                    format!("must be one of: {}", kind_names()),
                );
                continue;
            }
            None => {
                report.add(path, format!("missing `kind` (one of: {})", kind_names()));
                continue;
            }
        };
        let Some(k) = KINDS.iter().find(|k| k.name() == kind) else {
            let why = if PLANNED_KINDS.contains(&kind.as_str()) {
                format!("device kind `{kind}` is not available in this build yet")
            } else {
                format!("unknown device kind `{kind}`")
            };
            report.add(
                format!("{path}.kind"),
                format!("{why}; kinds available: {}", kind_names()),
            );
            continue;
        };
        let parsed = k.parse(Value::Mapping(map), &path, report);
        let parsed = parsed.map(|device| DeviceConfig {
            kind: k.name(),
            device,
        });
        out.extend(parsed.map(|d| (i, d)));
    }
    out
}

/// Resolves paths written in device entries (serial decoder scripts)
/// against the config file's folder.
pub(crate) fn resolve_paths(devices: &mut [DeviceConfig], config_dir: &Path) {
    for d in devices {
        d.device.resolve_paths(config_dir);
    }
}

/// Checks every device: valid and unique names, the kind's own checks,
/// and each kind's checks across its devices (RTU devices that share a
/// port). `positions[i]` is the index in
/// the YAML list of `devices[i]`; `config_file` anchors relative paths.
pub(crate) fn validate_all(
    devices: &[DeviceConfig],
    positions: &[usize],
    config_file: &Path,
    report: &mut Report,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (&i, dev) in positions.iter().zip(devices) {
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
        dev.device.validate(&path, config_file, report);
    }
    for k in KINDS {
        let mine: Vec<(String, &dyn Device)> = of_kind(devices, *k)
            .map(|(d, dev)| (format!("devices[{}]", positions[d]), dev))
            .collect();
        k.check_together(&mine, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Locations;

    /// Every registered kind reads its own entries and answers to its own
    /// word only: a kind is its registration, nothing else names it.
    #[test]
    fn each_kind_is_found_by_its_word_and_the_words_are_distinct() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        let text = "- { name: s, kind: simulated, points: [ { name: t, signal: sine } ] }\n";
        let locations = Locations::index(text);
        let mut report = Report::new(&locations);
        let values: Vec<Value> = serde_yaml_ng::from_str(text).unwrap();
        let parsed = parse_all(values, &mut report);
        report.finish(Path::new("fieldgate.yaml")).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.kind(), "simulated");
        assert_eq!(parsed[0].1.device().points()[0].name, "t");
    }
}
