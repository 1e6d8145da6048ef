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

#[cfg(test)]
mod tests {
    //! Unit tests of the rule helpers that remember between calls
    //! (`deadband`, `rate_limit`, `last`; `state.rs` and `api.rs`).

    use crate::reading::Value;
    use crate::rules::RulesEngine;
    use crate::rules::tests::{engine_for, one, reading, run, script};

    #[test]
    fn deadband_passes_changes_of_at_least_delta() {
        let text = "fn on_reading(r) { if deadband(r, 0.5) { emit(r); } }";
        let (_d, p) = script(text);
        let mut e = engine_for(&[p]);
        let vals = [10.0, 10.2, 10.49, 10.5, 10.1, 9.9, 9.99];
        let passed: Vec<f64> = vals
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                !run(&mut e, &reading("d", "p", Value::Float(**v), *i as i64))
                    .0
                    .is_empty()
            })
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(passed, vec![10.0, 10.5, 9.9]);
        // another point has its own band
        assert_eq!(
            run(&mut e, &reading("d", "q", Value::Float(10.1), 9))
                .0
                .len(),
            1
        );
    }

    #[test]
    fn deadband_with_max_age_and_on_quality_and_text_changes() {
        let text = "fn on_reading(r) { if deadband(r, 1, \"10s\") { emit(r); } }";
        let (_d, p) = script(text);
        let mut e = engine_for(&[p]);
        let mut pass = |v: Value, ts: i64, q: crate::reading::Quality| {
            let mut r = reading("d", "p", v, ts);
            r.quality = q;
            !run(&mut e, &r).0.is_empty()
        };
        use crate::reading::Quality::{Bad, Good};
        assert!(pass(Value::Int(5), 0, Good));
        assert!(!pass(Value::Int(5), 9_999, Good));
        assert!(pass(Value::Int(5), 10_000, Good), "max_age passed");
        assert!(pass(Value::Int(5), 10_001, Bad), "quality changed");
        assert!(
            pass(Value::String("on".into()), 10_002, Bad),
            "type changed"
        );
        assert!(!pass(Value::String("on".into()), 10_003, Bad));
        assert!(pass(Value::String("off".into()), 10_004, Bad));
    }

    #[test]
    fn rate_limit_lets_one_reading_per_period_through() {
        let text = "fn on_reading(r) { if rate_limit(r, 1000) { emit(r); } }";
        let (_d, p) = script(text);
        let mut e = engine_for(&[p]);
        let passed: Vec<i64> = [0, 200, 999, 1000, 1500, 2100, 2200]
            .into_iter()
            .filter(|ts| {
                !run(&mut e, &reading("d", "p", Value::Int(1), *ts))
                    .0
                    .is_empty()
            })
            .collect();
        assert_eq!(passed, vec![0, 1000, 2100]);
        let text = "fn on_reading(r) {\n if rate_limit(r, \"soon\") { emit(r); } }";
        let (_, f) = one(text, &reading("d", "p", Value::Int(1), 0));
        assert!(f[0].error.to_string().contains("soon"), "{}", f[0].error);
    }

    #[test]
    fn last_gives_the_previous_value_of_any_point() {
        let text = r#"
    fn on_reading(r) {
        let v = last("m", "voltage");
        let lr = last_reading("m", "voltage");
        publish("last", if v == () { "none" } else { `${v}@${lr.ts}` });
    }"#;
        let (_d, p) = script(text);
        let mut e = engine_for(&[p]);
        let out = |e: &mut RulesEngine, r| run(e, &r).0[0].payload.to_vec();
        assert_eq!(
            out(&mut e, reading("m", "current", Value::Int(2), 1)),
            b"none"
        );
        assert_eq!(
            out(&mut e, reading("m", "voltage", Value::Int(230), 2)),
            b"none",
            "own value is the previous one"
        );
        assert_eq!(
            out(&mut e, reading("m", "current", Value::Int(3), 3)),
            b"230@2"
        );
    }
}
