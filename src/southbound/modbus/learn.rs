//! Limits learned per device: the largest read a device accepts and the
//! unmapped address ranges ("holes") inside a block that merged reads must
//! not cover, found when the device refuses a merged read, kept in
//! `{data_dir}/modbus-learned.json` across restarts, and used by the
//! device's merge from then on.
//!
//! Learning, when a read covering several points is refused with exception
//! 02 (illegal data address) or 03 (illegal data value):
//! 1. each point of it is read alone; points refused alone are the
//!    device's own errors (reported as such), not learned from;
//! 2. for each gap between two neighbouring points, the smallest read over
//!    both is tried: refused, while both alone are answered, the gap is a
//!    hole (a device whose largest read is shorter than two neighbouring
//!    points and their gap would be taken for one with a hole: its reads
//!    then stop at that gap, which is also correct, only less merged);
//! 3. the points are merged again around the holes; when a merged read is
//!    still refused, the largest accepted read is searched for by halving
//!    between the longest read known to work and the shortest refused.
//!
//! A device that stops answering during learning leaves the limits as they
//! were (its refused read is then split per point, as before). The file is
//! keyed by device name with a fingerprint of unit and points, so a config
//! change starts over; a broken file is set aside (renamed
//! `*.corrupt-<time>`), never a crash.
//!
//! Owns the learning steps and the file. Must not decode values or send
//! readings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use super::merge::Hole;
use super::merge::{self, Limits, ReadRequest, Span};

/// The file in `data_dir`.
pub const FILE: &str = "modbus-learned.json";

/// What one device taught us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// Of the unit and points it was learned with.
    pub fingerprint: String,
    /// The largest read (registers) it accepts, when smaller than configured.
    pub max_registers: Option<u16>,
    pub holes: Vec<Hole>,
}

impl Learned {
    /// `max 16 registers per read; hole holding 10..=11` for logs, check and
    /// `/healthz`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.max_registers {
            parts.push(format!("max {m} registers per read"));
        }
        for h in &self.holes {
            parts.push(format!("hole {} {}..={}", h.table.as_str(), h.start, h.end));
        }
        parts.join("; ")
    }

    /// The configured limits narrowed by what was learned.
    pub fn limits(&self, configured: Limits) -> Limits {
        Limits {
            max_registers: self.max_registers.map_or(configured.max_registers, |m| {
                m.min(configured.max_registers)
            }),
            ..configured
        }
    }
}

/// A stable fingerprint (FNV-1a) of the unit and every point's place.
pub fn fingerprint(unit: u8, spans: &[Span]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(unit);
    for s in spans {
        eat(s.table.read_fc());
        s.start.to_be_bytes().into_iter().for_each(&mut eat);
        s.count.to_be_bytes().into_iter().for_each(&mut eat);
    }
    format!("{h:016x}")
}

/// Asks the device one read: `Some(true)` answered, `Some(false)` refused
/// with exception 02 or 03, `None` anything else (no answer: stop learning).
pub trait Probe {
    async fn accepts(&mut self, req: &ReadRequest) -> Option<bool>;
}

/// Learns from the `refused` read, on top of `known`; `None` when the
/// device stopped answering.
pub async fn learn(
    refused: &ReadRequest,
    configured: Limits,
    known: &Learned,
    probe: &mut impl Probe,
) -> Option<Learned> {
    let mut good = Vec::new();
    let mut lo = 1u16; // the longest read known to be answered
    for s in &refused.spans {
        if probe.accepts(&ReadRequest::single(*s)).await? {
            good.push(*s);
            lo = lo.max(s.count);
        }
    }
    good.sort_by_key(|s| (s.table, s.start));
    let mut out = known.clone();
    for pair in good.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let a_end = a.start.saturating_add(a.count);
        if a.table != b.table || b.start <= a_end || split_by(&out.holes, a, b) {
            continue;
        }
        let both = merge::merge_avoiding(&[a, b], wide(), &[]);
        let same = |r: &ReadRequest| r.start == refused.start && r.count == refused.count;
        // the refused read itself is not asked again
        if both.len() == 1 && (same(&both[0]) || !probe.accepts(&both[0]).await?) {
            out.holes.push(Hole {
                table: a.table,
                start: a_end,
                end: b.start - 1,
            });
        }
    }
    // the largest read: between `ok` (known to work) and `bad` (refused,
    // or past the configured cap); the configured cap is tried first
    let max = out.limits(configured).max_registers;
    let (mut ok, mut bad) = (lo.min(max), max.saturating_add(1));
    let mut cap = max;
    while bad - ok > 1 {
        let limits = Limits {
            max_registers: cap,
            ..configured
        };
        let mut all = true;
        for r in merge::merge_avoiding(&good, limits, &out.holes) {
            if !probe.accepts(&r).await? {
                all = false;
                break;
            }
        }
        if all {
            ok = cap;
        } else {
            bad = cap;
        }
        cap = ok + (bad - ok) / 2;
    }
    if ok < max {
        out.max_registers = Some(ok);
    }
    Some(out)
}

/// Limits that let two points merge whatever their gap and size.
fn wide() -> Limits {
    Limits {
        max_gap: u16::MAX,
        max_registers: 125,
    }
}

/// Whether a known hole lies between `a` and `b`.
fn split_by(holes: &[Hole], a: Span, b: Span) -> bool {
    holes
        .iter()
        .any(|h| h.table == a.table && h.start >= a.start && h.end < b.start)
}

/// One lock for every read-modify-write of the file (devices learn apart).
static FILE_LOCK: Mutex<()> = Mutex::new(());

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Every device's entry; a file that cannot be parsed is set aside when
/// `repair` (the gateway; `fieldgate check` only reads).
fn read_all(data_dir: &Path, repair: bool) -> BTreeMap<String, Learned> {
    let p = path(data_dir);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return BTreeMap::new();
    };
    match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(_) if !repair => BTreeMap::new(),
        Err(e) => {
            let moved = crate::config::files::set_aside(&p);
            warn!(path = %p.display(), error = %e, moved_to = ?moved.ok(),
                "learned Modbus limits unreadable: set aside, learning starts over");
            BTreeMap::new()
        }
    }
}

/// What `device` learned with these points, if anything.
pub fn load(data_dir: &Path, device: &str, fingerprint: &str) -> Option<Learned> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    read_all(data_dir, true)
        .remove(device)
        .filter(|l| l.fingerprint == fingerprint)
}

/// As [`load`], changing nothing on disk (for `fieldgate check`).
pub fn peek(data_dir: &Path, device: &str, fingerprint: &str) -> Option<Learned> {
    read_all(data_dir, false)
        .remove(device)
        .filter(|l| l.fingerprint == fingerprint)
}

/// Keeps `learned` for `device` (write to a temporary file, then rename).
pub fn save(data_dir: &Path, device: &str, learned: &Learned) {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut all = read_all(data_dir, true);
    all.insert(device.to_string(), learned.clone());
    let p = path(data_dir);
    let tmp = p.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&all)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &p)
        });
    if let Err(e) = written {
        warn!(path = %p.display(), error = %e, device,
            "cannot keep learned Modbus limits; they are used until the restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::southbound::modbus::points::Table;

    /// A device that answers reads of at most `max` registers over mapped
    /// addresses only (any unmapped address in a read: exception 02).
    struct Device {
        max: u16,
        mapped: std::ops::RangeInclusive<u16>,
        unmapped: Vec<std::ops::RangeInclusive<u16>>,
        asked: usize,
    }

    impl Probe for Device {
        async fn accepts(&mut self, req: &ReadRequest) -> Option<bool> {
            self.asked += 1;
            let end = req.start + req.count - 1;
            let inside = self.mapped.contains(&req.start) && self.mapped.contains(&end);
            let holed = self
                .unmapped
                .iter()
                .any(|h| *h.start() <= end && *h.end() >= req.start);
            Some(req.count <= self.max && inside && !holed)
        }
    }

    fn spans(addrs: impl Iterator<Item = u16>) -> Vec<Span> {
        addrs
            .enumerate()
            .map(|(point, start)| Span {
                point,
                table: Table::Holding,
                start,
                count: 1,
            })
            .collect()
    }

    impl Device {
        fn new(
            max: u16,
            mapped: std::ops::RangeInclusive<u16>,
            unmapped: Vec<std::ops::RangeInclusive<u16>>,
        ) -> Device {
            Device {
                max,
                mapped,
                unmapped,
                asked: 0,
            }
        }
    }

    /// Learns from the merged read over `points`, refused as a whole.
    async fn learn_refused(points: &[Span], probe: &mut impl Probe) -> Option<Learned> {
        let refused = &merge::merge(points, CONFIGURED)[0];
        learn(refused, CONFIGURED, &Learned::default(), probe).await
    }

    const CONFIGURED: Limits = Limits {
        max_gap: 10,
        max_registers: 125,
    };

    #[tokio::test]
    async fn finds_the_largest_read_and_the_hole() {
        // points at 0..=9 and 12..=59; 10 and 11 unmapped; reads of 16 at most
        let points = spans((0..10).chain(12..60));
        let mut dev = Device::new(16, 0..=59, vec![10..=11]);
        assert_eq!(
            merge::merge(&points, CONFIGURED).len(),
            1,
            "one read of 60 is refused"
        );
        let learned = learn_refused(&points, &mut dev).await.expect("answers");
        assert_eq!(learned.max_registers, Some(16));
        assert_eq!(
            learned.holes,
            vec![Hole {
                table: Table::Holding,
                start: 10,
                end: 11
            }]
        );
        assert_eq!(
            learned.summary(),
            "max 16 registers per read; hole holding 10..=11"
        );
        // every read of the new merge is answered
        let plan = merge::merge_avoiding(&points, learned.limits(CONFIGURED), &learned.holes);
        for r in &plan {
            assert!(dev.accepts(r).await.expect("answer"), "{r} refused");
        }
        assert_eq!(plan.len(), 1 + 3, "0..=9, then 48 registers in reads of 16");
        assert!(dev.asked < 90, "{} probes", dev.asked);
    }

    #[tokio::test]
    async fn a_hole_alone_leaves_the_size_as_configured() {
        let points = spans((0..5).chain(8..12));
        let mut dev = Device::new(125, 0..=11, vec![5..=7]);
        let learned = learn_refused(&points, &mut dev).await.expect("answers");
        assert_eq!(learned.max_registers, None);
        assert_eq!(learned.holes.len(), 1);
    }

    struct Gone;

    impl Probe for Gone {
        async fn accepts(&mut self, _: &ReadRequest) -> Option<bool> {
            None
        }
    }

    #[tokio::test]
    async fn a_device_that_stops_answering_teaches_nothing() {
        let points = spans(0..4);
        assert!(learn_refused(&points, &mut Gone).await.is_none());
    }

    #[test]
    fn the_file_keeps_what_was_learned_and_a_broken_one_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Learned {
            fingerprint: fingerprint(1, &spans(0..3)),
            max_registers: Some(16),
            holes: vec![],
        };
        save(dir.path(), "meter", &l);
        assert_eq!(load(dir.path(), "meter", &l.fingerprint), Some(l.clone()));
        assert_eq!(
            load(dir.path(), "meter", "other points"),
            None,
            "config changed"
        );
        std::fs::write(dir.path().join(FILE), "{not json").expect("write");
        assert_eq!(load(dir.path(), "meter", &l.fingerprint), None);
        let aside = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside, "the broken file was set aside");
    }
}
