//! The `serial` kind as the `devices:` list sees it: its registration
//! ([`KIND`]: one source per device) and [`SerialConfig`] as a [`Device`]
//! (its checks, its points for the catalogue, its lines in the plan).
//!
//! Owns only this plumbing; must not open the port.

use std::path::Path;
use std::time::Duration;

use super::decoder::PointType;
use super::{Serial, SerialConfig};
use crate::config::Report;
use crate::ports::points::{PointKind, PointSpec};
use crate::southbound::kind::{
    Device, KindOf, PlanContext, no_checks_together, one_each, read_only,
};

/// `kind: serial`: one source per device.
pub(crate) const KIND: KindOf<SerialConfig> = KindOf {
    name: "serial",
    check_together: no_checks_together,
    sources: |devices, _| one_each(devices.iter().map(|c| (*c).clone()), Serial::new),
};

impl Device for SerialConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, path: &str, config_file: &Path, report: &mut Report) {
        SerialConfig::validate(self, config_file, path, report)
    }

    fn resolve_paths(&mut self, config_dir: &Path) {
        SerialConfig::resolve_paths(self, config_dir)
    }

    fn poll(&self) -> Option<Duration> {
        self.request.as_ref().map(|r| r.every.get())
    }

    fn points(&self) -> Vec<PointSpec> {
        self.points
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    Some(PointType::Bool) => PointKind::Bool,
                    Some(PointType::String) => PointKind::Text,
                    _ => PointKind::Float,
                };
                read_only(&p.name, p.unit.as_ref(), kind)
            })
            .collect()
    }

    fn describe(&self, s: &mut String, plan: &PlanContext<'_>) {
        super::describe::describe(s, self, plan)
    }
}
