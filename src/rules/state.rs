//! What rule helpers remember between calls: per script, the last value
//! `deadband` let through and the last time `rate_limit` did, per
//! device/point; for all scripts, the last reading of every point (`last`).
//!
//! Owns the memory and its bounds. Every map here is capped at
//! [`MAX_TRACKED`] points: past that, helpers let new points through
//! untracked (fail open: a reading is published rather than lost) and
//! `last` does not learn new points; [`HelperState::untracked`] and
//! [`LastValues::untracked`] count those cases.

use std::collections::HashMap;
use std::sync::Arc;

use rhai::{Dynamic, ImmutableString};

use super::script_reading::ScriptReading;
use crate::reading::Reading;

/// Most device/point pairs one map remembers.
pub const MAX_TRACKED: usize = 100_000;

/// A two-level map device -> point -> T with a size cap.
struct Tracked<T> {
    map: HashMap<ImmutableString, HashMap<ImmutableString, T>>,
    len: usize,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Tracked {
            map: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Tracked<T> {
    fn get_mut(&mut self, device: &str, point: &str) -> Option<&mut T> {
        self.map.get_mut(device)?.get_mut(point)
    }

    /// Inserts a new entry; `false` when the cap is reached.
    fn insert(&mut self, device: &ImmutableString, point: &ImmutableString, v: T) -> bool {
        if self.len >= MAX_TRACKED {
            return false;
        }
        self.map
            .entry(device.clone())
            .or_default()
            .insert(point.clone(), v);
        self.len += 1;
        true
    }
}

struct Band {
    value: Dynamic,
    quality: ImmutableString,
    ts: i64,
}

/// `deadband` and `rate_limit` memory of one script.
#[derive(Default)]
pub(crate) struct HelperState {
    deadband: Tracked<Band>,
    rate: Tracked<i64>,
    /// Calls that let a reading through untracked because a map was full.
    pub untracked: u64,
}

fn as_number(v: &Dynamic) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)] // comparing against a deadband
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
}

impl HelperState {
    /// `true` when `r` should be published: the first value of a point, a
    /// numeric change of at least `delta` since the last value let through,
    /// any change of a non-numeric value or of quality, or (with `max_age`)
    /// when the last value let through is that old by reading time.
    pub fn deadband(&mut self, r: &ScriptReading, delta: f64, max_age: Option<i64>) -> bool {
        let Some(band) = self.deadband.get_mut(&r.device, &r.point) else {
            let band = Band {
                value: r.value.clone(),
                quality: r.quality.clone(),
                ts: r.ts,
            };
            if !self.deadband.insert(&r.device, &r.point, band) {
                self.untracked += 1;
            }
            return true;
        };
        let changed = match (as_number(&band.value), as_number(&r.value)) {
            (Some(a), Some(b)) => (b - a).abs() >= delta || b.is_nan() != a.is_nan(),
            _ => band.value.to_string() != r.value.to_string(),
        };
        let aged = max_age.is_some_and(|m| r.ts.saturating_sub(band.ts) >= m);
        let pass = changed || aged || band.quality != r.quality;
        if pass {
            band.value = r.value.clone();
            band.quality = r.quality.clone();
            band.ts = r.ts;
        }
        pass
    }

    /// `true` when no reading of this point was let through during the
    /// last `period_ms` (by reading time).
    pub fn rate_limit(&mut self, r: &ScriptReading, period_ms: i64) -> bool {
        match self.rate.get_mut(&r.device, &r.point) {
            Some(last) => {
                // A clock step backwards lets the reading through and restarts.
                let elapsed = r.ts.saturating_sub(*last);
                if elapsed >= period_ms || elapsed < 0 {
                    *last = r.ts;
                    true
                } else {
                    false
                }
            }
            None => {
                if !self.rate.insert(&r.device, &r.point, r.ts) {
                    self.untracked += 1;
                }
                true
            }
        }
    }
}

/// The last reading of every point, as it came from the device (before any
/// script changed it).
#[derive(Default)]
pub(crate) struct LastValues {
    map: HashMap<Arc<str>, HashMap<Arc<str>, Reading>>,
    len: usize,
    /// Readings of new points not remembered because the map was full.
    pub untracked: u64,
}

impl LastValues {
    pub fn get(&self, device: &str, point: &str) -> Option<&Reading> {
        self.map.get(device)?.get(point)
    }

    pub fn update(&mut self, r: &Reading) {
        if let Some(slot) = self
            .map
            .get_mut(&*r.device)
            .and_then(|m| m.get_mut(&*r.point))
        {
            slot.clone_from(r);
            return;
        }
        if self.len >= MAX_TRACKED {
            self.untracked += 1;
            return;
        }
        self.map
            .entry(r.device.clone())
            .or_default()
            .insert(r.point.clone(), r.clone());
        self.len += 1;
    }
}
