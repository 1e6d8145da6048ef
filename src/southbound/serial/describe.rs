//! The lines a serial device adds to `fieldgate check`'s plan: port
//! settings, framing, decoder, request, points and their topics.
//!
//! Owns only wording; must not open the port.

use std::fmt::Write;

use super::SerialConfig;
use super::framing::{self, FrameMode, unescape};
use crate::southbound::kind::PlanContext;

/// The device's lines in `fieldgate check`'s plan.
pub(super) fn describe(s: &mut String, c: &SerialConfig, plan: &PlanContext<'_>) {
    let gw = plan.gateway;
    let parity = c.parity.letter();
    let frame = match c.frame.mode() {
        Ok((FrameMode::Delimiter(d), _)) => {
            format!("delimiter \"{}\"", framing::escape_for_log(&d, 16))
        }
        Ok((FrameMode::Length(n), None)) => format!("length {n}"),
        Ok((FrameMode::Length(n), Some(t))) => format!(
            "length {n}, a pause of {} drops a partial frame",
            humantime::format_duration(t)
        ),
        Ok((FrameMode::Idle, Some(t))) => format!("idle {}", humantime::format_duration(t)),
        _ => "?".to_string(),
    };
    let decoder = match &c.decoder_path {
        Some(p) if c.decoder != "json" => format!("{} (fn decode; compiled OK)", p.display()),
        _ => "json".to_string(),
    };
    let _ = writeln!(
        s,
        "  {} (serial {} {} {}{}{}, frame {frame}, max {}) status {gw}/status/{}",
        c.name,
        c.port.display(),
        c.baud,
        c.data_bits,
        parity,
        c.stop_bits,
        c.max_frame,
        c.name
    );
    let _ = writeln!(s, "    decoder {decoder}");
    if let Some(r) = &c.request {
        let data = unescape(&r.data).unwrap_or_default();
        let _ = writeln!(
            s,
            "    request \"{}\" every {}",
            framing::escape_for_log(&data, 32),
            r.every
        );
    }
    for p in &c.points {
        let unit = p
            .unit
            .as_deref()
            .map(|u| format!(" [{u}]"))
            .unwrap_or_default();
        let kind = p
            .kind
            .map(|k| format!(" {}", format!("{k:?}").to_lowercase()))
            .unwrap_or_default();
        let topic = (plan.topic)(&c.name, &p.name);
        let _ = writeln!(s, "    {:<16}{kind}{unit} -> {topic}", p.name);
    }
    if !c.strict {
        let topic = (plan.topic)(&c.name, "{point}");
        let _ = writeln!(s, "    (points named by the decoder) -> {topic}");
    }
}
