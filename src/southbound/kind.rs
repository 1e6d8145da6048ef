//! What a device kind is to the gateway: [`Device`], one configured
//! `devices:` entry (its checks, its points for the catalogue, its part of
//! `fieldgate check`), and [`Kind`], the kind as `kind:` names it (reading
//! an entry, the checks across its devices, the sources that poll them).
//! A kind implements [`Device`] for its config struct and registers a
//! [`KindOf`] in the `devices:` list's kinds.
//!
//! Owns the contract between the `devices:` list and the kinds. Must not
//! name a kind, nor know about rules or topics (the plan hands a kind the
//! topic of a point as a function).

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::Source;
use super::commands::Routes;
use super::guard::WriteLimits;
use crate::config::Report;
use crate::ports::points::{PointKind, PointSpec};

/// One configured device of some kind.
pub trait Device: Any + Send + Sync + fmt::Debug + CloneDevice {
    /// The device's `name`.
    fn name(&self) -> &str;
    /// The kind's own checks of one entry at `path` (`devices[i]`);
    /// `config_file` anchors relative paths.
    fn validate(&self, path: &str, config_file: &Path, report: &mut Report);
    /// Resolves paths the entry names against the config file's folder.
    fn resolve_paths(&mut self, _config_dir: &Path) {}
    /// The writable points and the limits the commands task checks their
    /// writes against.
    fn write_limits(&self) -> Vec<(&str, WriteLimits)> {
        Vec::new()
    }
    /// How often the device is sampled, when it is.
    fn poll(&self) -> Option<Duration>;
    /// The configured points, for the catalogue.
    fn points(&self) -> Vec<PointSpec>;
    /// The device's lines in `fieldgate check`'s plan.
    fn describe(&self, s: &mut String, plan: &PlanContext<'_>);
}

/// What a device's part of the plan needs from the rest of the config.
pub struct PlanContext<'a> {
    pub gateway: &'a str,
    pub data_dir: &'a Path,
    /// The topic of a point under the default mapping: `(device, point)`.
    pub topic: &'a dyn Fn(&str, &str) -> String,
}

/// A boxed [`Device`] clones itself (every `Clone` device does).
pub trait CloneDevice {
    fn clone_device(&self) -> Box<dyn Device>;
}

impl<T: Device + Clone> CloneDevice for T {
    fn clone_device(&self) -> Box<dyn Device> {
        Box::new(self.clone())
    }
}

/// A device kind as `kind:` names it.
pub trait Kind: Sync {
    /// The word in `kind:`.
    fn name(&self) -> &'static str;
    /// Reads one entry (without its `kind`); problems go to `report`.
    fn parse(&self, value: Value, path: &str, report: &mut Report) -> Option<Box<dyn Device>>;
    /// The checks across this kind's devices, each with its YAML path.
    fn check_together(&self, devices: &[(String, &dyn Device)], report: &mut Report);
    /// The sources that poll this kind's devices (one per device, or one
    /// per shared bus), with their command queues registered in `routes`.
    fn sources(&self, devices: &[&dyn Device], routes: &mut Routes) -> Sources;
}

/// The sources a kind makes.
pub type Sources = Vec<Box<dyn Source>>;

/// A [`Kind`] whose entries are the config struct `C`.
pub struct KindOf<C> {
    pub name: &'static str,
    /// The checks across the kind's devices: `(yaml path, config)`.
    pub check_together: fn(&[(String, &C)], &mut Report),
    /// The sources for the kind's devices.
    pub sources: fn(&[&C], &mut Routes) -> Sources,
}

/// One source per item (a device, or a bus of devices), made by `new`.
pub fn one_each<T, S: Source>(
    items: impl IntoIterator<Item = T>,
    new: impl FnMut(T) -> S,
) -> Sources {
    items
        .into_iter()
        .map(new)
        .map(|s| Box::new(s) as Box<dyn Source>)
        .collect()
}

/// A point that cannot be written, for the catalogue.
pub fn read_only(name: &str, unit: Option<&String>, kind: PointKind) -> PointSpec {
    PointSpec {
        name: name.to_string(),
        unit: unit.cloned(),
        kind,
        writable: false,
        write_range: (None, None),
        scale: None,
        deadband: None,
    }
}

/// For a kind without checks across its devices.
pub fn no_checks_together<C>(_: &[(String, &C)], _: &mut Report) {}

/// The device of `d`, which the caller knows is a `C`.
fn typed<C: Device>(d: &dyn Device) -> Option<&C> {
    let any: &dyn Any = d;
    any.downcast_ref()
}

impl<C: Device + DeserializeOwned> Kind for KindOf<C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parse(&self, value: Value, path: &str, report: &mut Report) -> Option<Box<dyn Device>> {
        match serde_path_to_error::deserialize::<_, C>(value) {
            Ok(c) => Some(Box::new(c)),
            Err(e) => {
                report.add_serde(path, e);
                None
            }
        }
    }

    fn check_together(&self, devices: &[(String, &dyn Device)], report: &mut Report) {
        let typed: Vec<(String, &C)> = devices
            .iter()
            .filter_map(|(path, d)| Some((path.clone(), typed(*d)?)))
            .collect();
        (self.check_together)(&typed, report)
    }

    fn sources(&self, devices: &[&dyn Device], routes: &mut Routes) -> Sources {
        let typed: Vec<&C> = devices.iter().filter_map(|d| typed(*d)).collect();
        (self.sources)(&typed, routes)
    }
}
