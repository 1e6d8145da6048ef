//! Read merging: merges the points of one device into as few read requests
//! as the protocol and the device allow, and splits a merged request again
//! when the device refuses it.
//!
//! Owns the merge rules (same table, gap at most `max_gap`, span at most
//! 125 registers / 2000 coils and `max_registers_per_request`). Must not do
//! I/O or decode values.

use std::fmt;

use super::points::Table;

/// An unmapped range `start..=end` of one table that a device refuses to
/// read (learned: `learn.rs`): no merged request covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hole {
    pub table: Table,
    pub start: u16,
    pub end: u16,
}

/// What the planner needs of a point: where it is and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index of the point in the device's point list.
    pub point: usize,
    pub table: Table,
    /// 0-based protocol address.
    pub start: u16,
    pub count: u16,
}

impl Span {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// One read request: a table, a 0-based range, and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// The spans (points) inside this request.
    pub spans: Vec<Span>,
}

impl ReadRequest {
    pub(super) fn single(s: Span) -> Self {
        ReadRequest {
            table: s.table,
            start: s.start,
            count: s.count,
            spans: vec![s],
        }
    }

    /// One request per point, for a request the device refused as a whole.
    pub fn split(&self) -> Vec<ReadRequest> {
        self.spans
            .iter()
            .copied()
            .map(ReadRequest::single)
            .collect()
    }

    /// The tokio-modbus request.
    pub fn to_request(&self) -> tokio_modbus::Request<'static> {
        use tokio_modbus::Request as R;
        match self.table {
            Table::Coil => R::ReadCoils(self.start, self.count),
            Table::Discrete => R::ReadDiscreteInputs(self.start, self.count),
            Table::Holding => R::ReadHoldingRegisters(self.start, self.count),
            Table::Input => R::ReadInputRegisters(self.start, self.count),
        }
    }
}

impl fmt::Display for ReadRequest {
    /// `holding 100..=109` (0-based protocol addresses).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = u32::from(self.start) + u32::from(self.count) - 1;
        if self.count == 1 {
            write!(f, "{} {}", self.table.as_str(), self.start)
        } else {
            write!(f, "{} {}..={last}", self.table.as_str(), self.start)
        }
    }
}

/// Limits of one device.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unused registers (or coils) bridged between two points.
    pub max_gap: u16,
    /// Cap on registers per request (the protocol caps at 125).
    pub max_registers: u16,
}

impl Limits {
    fn cap(&self, table: Table) -> u32 {
        if table.is_bits() {
            u32::from(table.protocol_limit())
        } else {
            u32::from(table.protocol_limit().min(self.max_registers.max(1)))
        }
    }
}

/// Merges `spans` into requests. Requests come out ordered by table, then
/// address; points in a request are ordered by address. Overlapping points
/// (two views of the same registers) share a request.
pub fn merge(spans: &[Span], limits: Limits) -> Vec<ReadRequest> {
    merge_avoiding(spans, limits, &[])
}

/// As [`merge`], and no request covers a learned hole (`learn.rs`).
pub fn merge_avoiding(spans: &[Span], limits: Limits, holes: &[Hole]) -> Vec<ReadRequest> {
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| (s.table, s.start, s.count, s.point));
    let mut out: Vec<ReadRequest> = Vec::new();
    for s in sorted {
        if let Some(cur) = out.last_mut() {
            let cur_end = u32::from(cur.start) + u32::from(cur.count);
            let gap = u32::from(s.start).saturating_sub(cur_end);
            let new_end = cur_end.max(s.end());
            let holed = holes.iter().any(|h| {
                h.table == s.table
                    && u32::from(h.start) < new_end
                    && u32::from(h.end) >= u32::from(cur.start)
            });
            if cur.table == s.table
                && gap <= u32::from(limits.max_gap)
                && new_end - u32::from(cur.start) <= limits.cap(s.table)
                && !holed
            {
                cur.count = (new_end - u32::from(cur.start)) as u16;
                cur.spans.push(s);
                continue;
            }
        }
        out.push(ReadRequest::single(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(point: usize, table: Table, start: u16, count: u16) -> Span {
        Span {
            point,
            table,
            start,
            count,
        }
    }

    const L: Limits = Limits {
        max_gap: 10,
        max_registers: 125,
    };

    fn ranges(reqs: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        reqs.iter().map(|r| (r.table, r.start, r.count)).collect()
    }

    #[test]
    fn adjacent_and_small_gaps_merge() {
        let spans = [
            span(0, Table::Holding, 0, 2),
            span(1, Table::Holding, 2, 1),
            span(2, Table::Holding, 13, 2), // gap 10: bridged
            span(3, Table::Holding, 26, 1), // gap 11: new request
        ];
        let r = merge(&spans, L);
        assert_eq!(
            ranges(&r),
            vec![(Table::Holding, 0, 15), (Table::Holding, 26, 1)]
        );
        assert_eq!(r[0].spans.len(), 3);
    }

    #[test]
    fn tables_never_merge() {
        let spans = [
            span(0, Table::Holding, 0, 1),
            span(1, Table::Input, 1, 1),
            span(2, Table::Coil, 0, 1),
            span(3, Table::Discrete, 0, 1),
        ];
        assert_eq!(merge(&spans, L).len(), 4);
    }

    #[test]
    fn protocol_and_device_caps_hold() {
        let spans: Vec<Span> = (0..200)
            .map(|i| span(i, Table::Holding, i as u16, 1))
            .collect();
        let r = merge(&spans, L);
        assert_eq!(
            ranges(&r),
            vec![(Table::Holding, 0, 125), (Table::Holding, 125, 75)]
        );
        let r = merge(
            &spans,
            Limits {
                max_gap: 10,
                max_registers: 50,
            },
        );
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|q| q.count <= 50));
        // a multi-register point is never cut in two
        let spans = [
            span(0, Table::Holding, 0, 30),
            span(1, Table::Holding, 30, 30),
        ];
        let r = merge(
            &spans,
            Limits {
                max_gap: 0,
                max_registers: 40,
            },
        );
        assert_eq!(
            ranges(&r),
            vec![(Table::Holding, 0, 30), (Table::Holding, 30, 30)]
        );
    }

    #[test]
    fn coils_merge_up_to_2000() {
        let spans: Vec<Span> = (0..2100)
            .map(|i| span(i, Table::Coil, i as u16, 1))
            .collect();
        let r = merge(&spans, L);
        assert_eq!(
            ranges(&r),
            vec![(Table::Coil, 0, 2000), (Table::Coil, 2000, 100)]
        );
    }

    #[test]
    fn overlapping_points_share_a_request() {
        let spans = [
            span(0, Table::Holding, 10, 2),
            span(1, Table::Holding, 10, 1), // bit view of the first register
            span(2, Table::Holding, 5, 1),
        ];
        let r = merge(&spans, L);
        assert_eq!(ranges(&r), vec![(Table::Holding, 5, 7)]);
        assert_eq!(
            r[0].spans.iter().map(|s| s.point).collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
    }

    #[test]
    fn split_gives_one_request_per_point() {
        let spans = [span(0, Table::Input, 0, 2), span(1, Table::Input, 5, 1)];
        let r = merge(&spans, L);
        assert_eq!(r.len(), 1);
        assert_eq!(
            ranges(&r[0].split()),
            vec![(Table::Input, 0, 2), (Table::Input, 5, 1)]
        );
        assert_eq!(r[0].to_string(), "input 0..=5");
        assert_eq!(r[0].split()[1].to_string(), "input 5");
    }
}
