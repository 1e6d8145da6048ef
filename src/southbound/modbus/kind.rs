//! The Modbus kinds as the `devices:` list sees them: their registrations
//! ([`TCP_KIND`]: one source per device; [`RTU_KIND`], [`RTU_TCP_KIND`]:
//! one source per shared bus, with the checks across the devices on it)
//! and their config structs as [`Device`]s (checks, writable points, the
//! points for the catalogue, the lines in the plan).
//!
//! Owns this plumbing and how a Modbus point reads as a [`PointKind`].
//! Must not touch the network.

use std::path::Path;
use std::time::Duration;

use super::points::{DataType, PointConfig};
use super::{ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig, describe};
use super::{RtuBus, RtuTcpBus, TcpDevice, buses, tcp_buses, validate_buses, validate_tcp_buses};
use crate::config::Report;
use crate::ports::points::{PointKind, PointSpec};
use crate::southbound::guard::WriteLimits;
use crate::southbound::kind::{Device, KindOf, PlanContext, no_checks_together, one_each};

/// `kind: modbus-tcp`: one source per device.
pub(crate) const TCP_KIND: KindOf<ModbusTcpConfig> = KindOf {
    name: "modbus-tcp",
    check_together: no_checks_together,
    sources: |devices, routes| one_each(devices, |c| TcpDevice::new((*c).clone(), routes)),
};

/// `kind: modbus-rtu`: devices sharing a port become one source, the bus.
pub(crate) const RTU_KIND: KindOf<ModbusRtuConfig> = KindOf {
    name: "modbus-rtu",
    check_together: validate_buses,
    sources: |devices, routes| one_each(buses(devices), |bus| RtuBus::new(bus, routes)),
};

/// `kind: modbus-rtu-tcp`: devices behind one converter become one
/// source, the bus.
pub(crate) const RTU_TCP_KIND: KindOf<ModbusRtuTcpConfig> = KindOf {
    name: "modbus-rtu-tcp",
    check_together: validate_tcp_buses,
    sources: |devices, routes| one_each(tcp_buses(devices), |bus| RtuTcpBus::new(bus, routes)),
};

/// The [`Device`] of a Modbus config struct: what the three kinds share,
/// with the kind's own lines in the plan.
macro_rules! modbus_device {
    ($config:ty, $describe:path) => {
        impl Device for $config {
            fn name(&self) -> &str {
                &self.name
            }

            fn validate(&self, path: &str, _config_file: &Path, report: &mut Report) {
                <$config>::validate(self, path, report)
            }

            fn write_limits(&self) -> Vec<(&str, WriteLimits)> {
                write_limits(&self.points)
            }

            fn poll(&self) -> Option<Duration> {
                Some(self.poll.get())
            }

            fn points(&self) -> Vec<PointSpec> {
                points(&self.points)
            }

            fn describe(&self, s: &mut String, plan: &PlanContext<'_>) {
                $describe(s, self, plan)
            }
        }
    };
}

modbus_device!(ModbusTcpConfig, describe::tcp);
modbus_device!(ModbusRtuConfig, describe::rtu);
modbus_device!(ModbusRtuTcpConfig, describe::rtu_tcp);

fn write_limits(points: &[PointConfig]) -> Vec<(&str, WriteLimits)> {
    points
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.write_limits()?)))
        .collect()
}

fn point_kind(t: DataType, scaled: bool) -> PointKind {
    let int = |min: f64, max: f64| {
        if scaled {
            PointKind::Float
        } else {
            PointKind::Integer { min, max }
        }
    };
    match t {
        DataType::Bool => PointKind::Bool,
        DataType::U16 => int(0.0, 65_535.0),
        DataType::I16 => int(-32_768.0, 32_767.0),
        DataType::U32 => int(0.0, 4_294_967_295.0),
        DataType::I32 => int(-2_147_483_648.0, 2_147_483_647.0),
        DataType::U64 => int(0.0, 1e15),
        DataType::I64 => int(-1e15, 1e15),
        DataType::F32 if !scaled => PointKind::Float32,
        DataType::F32 | DataType::F64 => PointKind::Float,
        DataType::String => PointKind::Text,
    }
}

fn points(points: &[PointConfig]) -> Vec<PointSpec> {
    points
        .iter()
        .map(|p| PointSpec {
            name: p.name.clone(),
            unit: p.unit.clone(),
            kind: point_kind(p.data_type(), p.scale.is_some() || p.offset.is_some()),
            writable: p.writable,
            write_range: (p.min, p.max),
            scale: p.scale,
            deadband: p.deadband,
        })
        .collect()
}
