//! The last reading of every point, kept for the status page and the JSON
//! API: one map entry per point, overwritten by each new reading.
//!
//! Owns the process-wide map: devices by name, each with its own points
//! behind its own lock, so a source that holds its device's [`DeviceLast`]
//! records a whole batch with one lock and no lookup of the device. The
//! points are kept in the order they first came, with a by-name index; a
//! source that sends the same points in the same order every cycle (a
//! Modbus poll) finds each one at the place after the previous one, by
//! pointer, without comparing names. Sources record into it through
//! `SourceContext::send` / `send_all`; it must not hold anything but the
//! latest value and, beside it, the point's bounded trend history
//! ([`history`], recorded only once the wiring configured it).
//!
//! A leaf: must not import a stage or the metrics registry.

pub mod history;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::reading::{Quality, Reading, Value, now_ms};
use history::{DeviceBucket, Series};

/// The last reading of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct LastReading {
    pub value: Value,
    pub unit: Option<Arc<str>>,
    pub quality: Quality,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
}

/// The address of a name's or a unit's text: which allocation it is (the
/// `Arc` itself is kept beside, in [`Points`], so the address stays its
/// own); 0 for no unit.
fn addr(s: Option<&Arc<str>>) -> usize {
    s.map_or(0, |s| Arc::as_ptr(s).cast::<u8>() as usize)
}

/// What a reading of one point touches: its last reading (the unit by
/// address) and its history's inline part, two cache lines in all. A poll
/// of a device comes 100 ms after its last, when none of it is in the
/// caches; before, a point's entry (its name, unit and its history's rings
/// inline) took 224 bytes, four lines or five.
#[repr(align(64))]
struct Slot {
    value: Value,
    ts: i64,
    /// The address of the point's name (`Points::names`): a reading with
    /// the same allocation is this point's without comparing text.
    name: usize,
    /// The address of the unit (`Points::units`), 0 without one.
    unit: usize,
    quality: Quality,
    series: Series,
}

impl Slot {
    fn of(r: &Reading) -> Slot {
        Slot {
            value: r.value.clone(),
            ts: r.ts,
            name: addr(Some(&r.point)),
            unit: addr(r.unit.as_ref()),
            quality: r.quality,
            series: Series::default(),
        }
    }

    /// Takes `r` as the last reading, keeping a text's allocation when it
    /// can; `unit` is the point's held unit, replaced when `r`'s is another
    /// allocation.
    fn set(&mut self, r: &Reading, unit: &mut Option<Arc<str>>) {
        match (&mut self.value, &r.value) {
            (Value::String(held), Value::String(new)) => held.clone_from(new),
            (held, new) => *held = new.clone(),
        }
        let new_unit = addr(r.unit.as_ref());
        if self.unit != new_unit {
            *unit = r.unit.clone();
            self.unit = new_unit;
        }
        self.quality = r.quality;
        self.ts = r.ts;
    }

    fn last(&self, unit: &Option<Arc<str>>) -> LastReading {
        LastReading {
            value: self.value.clone(),
            unit: unit.clone(),
            quality: self.quality,
            ts: self.ts,
        }
    }
}

/// One device's points.
#[derive(Default)]
struct Points {
    /// Each point's last reading and history, in the order they first came.
    slots: Vec<Slot>,
    /// Each point's name, by place (read for the page, not per reading).
    names: Vec<Arc<str>>,
    /// Each point's unit, by place (touched when a unit changes).
    units: Vec<Option<Arc<str>>>,
    /// Point name -> its place in `slots`.
    index: BTreeMap<Arc<str>, usize>,
    /// Where the next reading's point probably is.
    hint: usize,
    trail: history::DeviceTrail,
}

impl Points {
    fn record(&mut self, r: &Reading, shape: Option<history::Shape>) {
        // where the next reading's point probably is: after the previous
        // one's, and past the last point the first (the next poll)
        let hint = if self.hint < self.slots.len() {
            self.hint
        } else {
            0
        };
        let at = match self.slots.get(hint) {
            Some(s) if s.name == addr(Some(&r.point)) => hint,
            _ => match self.index.get(&*r.point) {
                Some(&i) => {
                    // the same name in the reading's allocation: found at
                    // the hint by address from the next batch on
                    self.names[i] = r.point.clone();
                    self.slots[i].name = addr(Some(&r.point));
                    i
                }
                None => {
                    self.index.insert(r.point.clone(), self.slots.len());
                    self.slots.push(Slot::of(r));
                    self.names.push(r.point.clone());
                    self.units.push(r.unit.clone());
                    self.slots.len() - 1
                }
            },
        };
        let slot = &mut self.slots[at];
        slot.set(r, &mut self.units[at]);
        if let Some(shape) = shape {
            slot.series.record(r, shape);
        }
        self.hint = at + 1;
    }
}

type Map = BTreeMap<Arc<str>, Arc<Mutex<Points>>>;

static LAST: LazyLock<Mutex<Map>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One device's last readings, held by its source (created at the first
/// reading, so a device that never sent one is not listed).
#[derive(Clone)]
pub struct DeviceLast(Arc<Mutex<Points>>);

impl DeviceLast {
    /// The entry of `device` (made when missing).
    pub fn of(device: &Arc<str>) -> DeviceLast {
        let mut map = lock(&LAST);
        let points = match map.get(&**device) {
            Some(p) => p.clone(),
            None => map.entry(device.clone()).or_default().clone(),
        };
        DeviceLast(points)
    }

    /// Keeps each reading as its point's last one (one lock in all; a later
    /// reading of the same point wins).
    pub fn record_all(&self, readings: &[Reading]) {
        let shape = history::shape();
        let mut points = lock(&self.0);
        for r in readings {
            points.record(r, shape);
        }
        if let Some(shape) = shape {
            points.trail.readings(readings, shape);
        }
    }
}

/// A point's history as the API shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointHistory {
    /// (ms, value; `None`: a gap), oldest first
    pub raw: Vec<(i64, Option<f64>)>,
    pub buckets: Vec<history::BucketOut>,
    /// a text point's last changes
    pub texts: Vec<(i64, String)>,
}

/// Notes a device's state change in its history: going offline marks a
/// gap in each of its points and starts counting offline time.
pub fn mark_state(device: &str, online: bool) {
    let Some(shape) = history::shape() else {
        return;
    };
    let now = now_ms();
    let known = lock(&LAST).get(device).cloned();
    let points = match known {
        Some(p) => p,
        None if online => return,
        None => DeviceLast::of(&Arc::from(device)).0,
    };
    let mut points = lock(&points);
    if !online {
        for s in &mut points.slots {
            s.series.gap(now, shape);
        }
    }
    points.trail.state(online, now, shape);
}

/// Counts one poll of `device` (a source that polls in cycles reports
/// each: its time, its requests and the failed ones) in its trail.
pub fn mark_poll(device: &str, took_ms: u32, requests: u32, errors: u32) {
    let Some(shape) = history::shape() else {
        return;
    };
    let Some(points) = lock(&LAST).get(device).cloned() else {
        return;
    };
    lock(&points)
        .trail
        .poll(now_ms(), took_ms, requests, errors, shape);
}

/// The history of each point of `device` that has one, in the order the
/// points first came; empty when nothing is recorded.
pub fn history_of(device: &str) -> Vec<(Arc<str>, PointHistory)> {
    let (Some(shape), Some(points)) = (history::shape(), lock(&LAST).get(device).cloned()) else {
        return Vec::new();
    };
    let points = lock(&points);
    points
        .slots
        .iter()
        .zip(&points.names)
        .map(|(s, name)| {
            let h = PointHistory {
                raw: s.series.raw(),
                buckets: s.series.buckets(shape),
                texts: s.series.texts(),
            };
            (name.clone(), h)
        })
        .collect()
}

/// `device`'s readings and offline time per bucket, oldest first.
pub fn trail_of(device: &str) -> Vec<DeviceBucket> {
    let (Some(shape), Some(points)) = (history::shape(), lock(&LAST).get(device).cloned()) else {
        return Vec::new();
    };
    let mut points = lock(&points);
    points.trail.buckets(now_ms(), shape)
}

/// Bytes the histories of all points hold on the heap.
pub fn history_bytes() -> usize {
    let devices: Vec<_> = lock(&LAST).values().cloned().collect();
    devices
        .iter()
        .map(|p| {
            lock(p)
                .slots
                .iter()
                .map(|s| s.series.heap_bytes())
                .sum::<usize>()
        })
        .sum()
}

/// Keeps `r` as its point's last reading.
pub fn record(r: &Reading) {
    DeviceLast::of(&r.device).record_all(std::slice::from_ref(r));
}

/// The last reading of each point of `device`, by point name.
pub fn of_device(device: &str) -> BTreeMap<Arc<str>, LastReading> {
    let Some(points) = lock(&LAST).get(device).cloned() else {
        return BTreeMap::new();
    };
    let points = lock(&points);
    points
        .slots
        .iter()
        .zip(points.names.iter().zip(&points.units))
        .map(|(s, (name, unit))| (name.clone(), s.last(unit)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(device: &str, point: &str, v: i64) -> Reading {
        Reading {
            device: device.into(),
            point: point.into(),
            value: Value::Int(v),
            unit: None,
            ts: v,
            quality: Quality::Good,
        }
    }

    #[test]
    fn what_a_reading_touches_of_its_point_is_two_cache_lines() {
        assert_eq!(size_of::<Series>(), 64);
        assert_eq!((size_of::<Slot>(), align_of::<Slot>()), (128, 64));
    }

    #[test]
    fn the_last_reading_of_each_point_wins() {
        let dev: Arc<str> = "readings-unit-test".into();
        assert!(of_device(&dev).is_empty());
        let last = DeviceLast::of(&dev);
        last.record_all(&[
            reading(&dev, "a", 1),
            reading(&dev, "b", 2),
            reading(&dev, "a", 3),
        ]);
        record(&reading(&dev, "b", 4));
        let got = of_device(&dev);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"].value, Value::Int(3));
        assert_eq!(got["b"].value, Value::Int(4));
        assert_eq!(got["b"].ts, 4);
    }

    #[test]
    fn same_points_by_pointer_in_cycles_and_new_or_reordered_ones_by_name() {
        let dev: Arc<str> = "readings-unit-test-cycles".into();
        let names: Vec<Arc<str>> = ["p0", "p1", "p2"].into_iter().map(Arc::from).collect();
        let of = |name: &Arc<str>, v: i64| Reading {
            point: name.clone(),
            ..reading(&dev, "", v)
        };
        let last = DeviceLast::of(&dev);
        for cycle in 0..3 {
            let batch: Vec<Reading> = names.iter().map(|n| of(n, cycle)).collect();
            last.record_all(&batch);
        }
        // out of order, and names in other allocations than the first ones
        last.record_all(&[reading(&dev, "p2", 10), reading(&dev, "p0", 11)]);
        last.record_all(&[reading(&dev, "p3", 12), of(&names[1], 13)]);
        let got: Vec<(String, Value)> = of_device(&dev)
            .into_iter()
            .map(|(n, l)| (n.to_string(), l.value))
            .collect();
        assert_eq!(
            got,
            [
                ("p0".to_string(), Value::Int(11)),
                ("p1".to_string(), Value::Int(13)),
                ("p2".to_string(), Value::Int(10)),
                ("p3".to_string(), Value::Int(12)),
            ]
        );
    }
}
