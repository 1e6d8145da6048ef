//! The fixed bytes of a device's per-device payload: each point's key and
//! unit ([`Frame`]) and what ends a point's entry ([`Tail`]), written once
//! and copied into every message. Owns only these bytes; the grouping
//! (`grouping.rs`) decides what goes into a message and when.

use std::sync::Arc;

use crate::reading::{Quality, TS_KEY, quality_end, write_unit};

/// The bytes of the payload that do not change from poll to poll, every
/// point's in one buffer in message order: point i's key and the start
/// of its fields, `,"name":{"value":`, then its unit field for the unit
/// it was written for, `,"unit":"°C"` (nothing without a unit). A flush
/// reads them front to back, one stream the CPU's prefetcher follows;
/// two small allocations per point, cold after the 100 ms between two
/// polls, cost more than the copy itself (docs/benchmarks.md).
#[derive(Default)]
pub(super) struct Frame {
    bytes: Vec<u8>,
    at: Vec<FrameSpan>,
    /// The unit each point's bytes name.
    units: Vec<Option<Arc<str>>>,
}

/// Where one point's bytes are in [`Frame::bytes`].
#[derive(Clone, Copy)]
struct FrameSpan {
    head: usize,
    unit: usize,
    end: usize,
}

impl Frame {
    pub(super) fn push(&mut self, name: &str, unit: Option<Arc<str>>) {
        let head = self.bytes.len();
        self.bytes.push(b',');
        // writing a str to a Vec cannot fail
        let _ = serde_json::to_writer(&mut self.bytes, name);
        self.bytes.extend_from_slice(b":{\"value\":");
        let unit_at = self.bytes.len();
        write_unit(&mut self.bytes, unit.as_deref());
        self.at.push(FrameSpan {
            head,
            unit: unit_at,
            end: self.bytes.len(),
        });
        self.units.push(unit);
    }

    /// Point `i`'s `,"name":{"value":`.
    pub(super) fn head(&self, i: usize) -> &[u8] {
        let s = self.at[i];
        &self.bytes[s.head..s.unit]
    }

    /// Point `i`'s `,"unit":"°C"` (empty without a unit).
    pub(super) fn unit(&self, i: usize) -> &[u8] {
        let s = self.at[i];
        &self.bytes[s.unit..s.end]
    }

    /// Whether point `i`'s bytes name `unit`.
    pub(super) fn names(&self, i: usize, unit: &Option<Arc<str>>) -> bool {
        match (&self.units[i], unit) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        }
    }

    /// Rewrites point `i`'s bytes for `unit` (the points after it move).
    pub(super) fn set_unit(&mut self, i: usize, unit: Option<Arc<str>>) {
        let mut new = Vec::new();
        write_unit(&mut new, unit.as_deref());
        let s = self.at[i];
        let grown = new.len() as isize - (s.end - s.unit) as isize;
        self.bytes.splice(s.unit..s.end, new);
        self.at[i].end = s.end.saturating_add_signed(grown);
        for later in &mut self.at[i + 1..] {
            later.head = later.head.saturating_add_signed(grown);
            later.unit = later.unit.saturating_add_signed(grown);
            later.end = later.end.saturating_add_signed(grown);
        }
        self.units[i] = unit;
    }
}

/// What ends a point's entry after its unit:
/// `,"ts":1765…123,"quality":"good"}`. A poll's readings share their ts
/// and quality, so it is written once per payload (and again when either
/// changes), not once per point.
#[derive(Default)]
pub(super) struct Tail {
    of: Option<(i64, Quality)>,
    bytes: Vec<u8>,
}

impl Tail {
    pub(super) fn write(&mut self, out: &mut Vec<u8>, ts: i64, quality: Quality) {
        if self.of != Some((ts, quality)) {
            self.bytes.clear();
            self.bytes.extend_from_slice(TS_KEY);
            // writing an integer to a Vec cannot fail
            let _ = serde_json::to_writer(&mut self.bytes, &ts);
            self.bytes.extend_from_slice(quality_end(quality));
            self.bytes.push(b'}');
            self.of = Some((ts, quality));
        }
        out.extend_from_slice(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Frame;

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn a_changed_unit_rewrites_its_point_and_the_later_points_stay_whole() {
        let mut f = Frame::default();
        f.push("a", Some(Arc::from("°C")));
        f.push("b\"q", None);
        f.push("c", Some(Arc::from("V")));
        for unit in [Some("kWh per day"), None, Some("x"), Some("°C")] {
            let unit: Option<Arc<str>> = unit.map(Arc::from);
            f.set_unit(1, unit.clone());
            assert!(f.names(1, &unit));
            assert_eq!(text(f.head(0)), ",\"a\":{\"value\":");
            assert_eq!(text(f.unit(0)), ",\"unit\":\"°C\"");
            assert_eq!(text(f.head(1)), ",\"b\\\"q\":{\"value\":");
            let want = match &unit {
                Some(u) => format!(",\"unit\":\"{u}\""),
                None => String::new(),
            };
            assert_eq!(text(f.unit(1)), want);
            assert_eq!(text(f.head(2)), ",\"c\":{\"value\":");
            assert_eq!(text(f.unit(2)), ",\"unit\":\"V\"");
        }
        assert!(!f.names(2, &None));
        assert!(f.names(2, &Some(Arc::from("V"))));
    }
}
