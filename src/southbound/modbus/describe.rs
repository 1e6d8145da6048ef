//! The Modbus part of `fieldgate check`: per device, its points and the
//! read requests one poll cycle sends after merging.
//!
//! Owns the wording. Must not touch the network.

use std::fmt::Write;

use super::points::{DataType, Order, PointConfig};
use super::{Common, Framing, ModbusRtuConfig, ModbusRtuTcpConfig, ModbusTcpConfig};
use super::{learn, merge};
use crate::southbound::kind::PlanContext;

fn layout(p: &PointConfig) -> String {
    let ty = p.data_type();
    match (ty.registers(p.length), p.word_order, p.byte_order) {
        (_, _, _) if p.table.is_bits() || ty == DataType::Bool => String::new(),
        (_, _, Order::Big) if ty == DataType::String => String::new(),
        (_, _, Order::Little) if ty == DataType::String => " (BA)".into(),
        (1, _, Order::Big) => String::new(),
        (1, _, Order::Little) => " (BA)".into(),
        (_, Order::Big, Order::Big) => " (ABCD)".into(),
        (_, Order::Little, Order::Big) => " (CDAB)".into(),
        (_, Order::Big, Order::Little) => " (BADC)".into(),
        (_, Order::Little, Order::Little) => " (DCBA)".into(),
    }
}

fn points_and_requests(
    s: &mut String,
    name: &str,
    c: &Common,
    plan: &PlanContext<'_>,
    broadcast: bool,
) {
    let data_dir = plan.data_dir;
    for p in &c.points {
        let ty = p.data_type();
        let mut what = format!(
            "{} {} {}{}",
            p.table.as_str(),
            c.protocol_address(p),
            ty.as_str(),
            layout(p)
        );
        if let Some(len) = p.length {
            let _ = write!(what, "[{len}]");
        }
        if let Some(b) = p.bit {
            let _ = write!(what, " bit {b}");
        }
        if let Some(k) = p.scale {
            let _ = write!(what, " *{k}");
        }
        if let Some(o) = p.offset {
            let _ = write!(what, " {o:+}");
        }
        if let Some(u) = &p.unit {
            let _ = write!(what, " [{u}]");
        }
        if let Some(limits) = p.write_limits() {
            what.push_str(" writable");
            if let Some(range) = limits.range_text() {
                let _ = write!(what, " {range},");
            }
            let _ = write!(what, " at most {}", limits.rate);
        }
        let _ = writeln!(
            s,
            "    {:<16} {what} -> {}",
            p.name,
            (plan.topic)(name, &p.name)
        );
    }
    if broadcast {
        let _ = writeln!(
            s,
            "    broadcast (unit 0): never read; writes reach every unit on the bus, unanswered"
        );
        return;
    }
    // what the device taught before, as the gateway will use it
    let spans = c.spans();
    let learned = learn::peek(data_dir, name, &learn::fingerprint(c.unit, &spans));
    let requests = match &learned {
        Some(l) => merge::merge_avoiding(&spans, l.limits(c.limits()), &l.holes),
        None => c.read_requests(),
    };
    if let Some(l) = &learned {
        let _ = writeln!(
            s,
            "    learned ({}): {}",
            data_dir.join(learn::FILE).display(),
            l.summary()
        );
    }
    let _ = writeln!(
        s,
        "    requests per poll: {} (one per point: {}; max_gap {}, max_registers_per_request {})",
        requests.len(),
        c.unmerged_requests(),
        c.max_gap,
        c.max_registers_per_request
    );
    for r in &requests {
        let names: Vec<&str> = r
            .spans
            .iter()
            .map(|sp| c.points[sp.point].name.as_str())
            .collect();
        let unit = match (r.table.is_bits(), r.count) {
            (true, 1) => "bit",
            (true, _) => "bits",
            (false, 1) => "register",
            (false, _) => "registers",
        };
        let _ = writeln!(
            s,
            "      FC{:02} {r} ({} {unit}): {}",
            r.table.read_fc(),
            r.count,
            names.join(", ")
        );
    }
}

fn framing(f: Framing) -> &'static str {
    match f {
        Framing::Rtu => "RTU",
        Framing::Ascii => "ASCII",
    }
}

fn timing(c: &Common) -> String {
    format!(
        "unit {}, every {}, timeout {}, retries {}",
        c.unit, c.poll, c.timeout, c.retries
    )
}

/// The plan of one `modbus-tcp` device.
pub(super) fn tcp(s: &mut String, c: &ModbusTcpConfig, plan: &PlanContext<'_>) {
    let gw = plan.gateway;
    let _ = writeln!(
        s,
        "  {} (modbus-tcp {}, {}) status {gw}/status/{}",
        c.name,
        c.address,
        timing(&c.common()),
        c.name
    );
    points_and_requests(s, &c.name, &c.common(), plan, false);
}

/// The plan of one `modbus-rtu` device.
pub(super) fn rtu(s: &mut String, c: &ModbusRtuConfig, plan: &PlanContext<'_>) {
    let gw = plan.gateway;
    let _ = writeln!(
        s,
        "  {} (modbus-rtu{} on {} {} {}{}{}, {}) status {gw}/status/{}",
        c.name,
        if c.framing == Framing::Ascii {
            " ascii"
        } else {
            ""
        },
        c.port.display(),
        c.baud,
        c.data_bits,
        c.parity.letter(),
        c.stop_bits,
        timing(&c.common()),
        c.name
    );
    points_and_requests(s, &c.name, &c.common(), plan, c.unit == 0);
}

/// The plan of one `modbus-rtu-tcp` device.
pub(super) fn rtu_tcp(s: &mut String, c: &ModbusRtuTcpConfig, plan: &PlanContext<'_>) {
    let gw = plan.gateway;
    let _ = writeln!(
        s,
        "  {} (modbus-rtu-tcp {} {} frames{}, {}) status {gw}/status/{}",
        c.name,
        c.address,
        framing(c.framing),
        if c.close_after_poll {
            ", closed after each poll"
        } else {
            ""
        },
        timing(&c.common()),
        c.name
    );
    points_and_requests(s, &c.name, &c.common(), plan, c.unit == 0);
}
