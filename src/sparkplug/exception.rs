//! Report by exception: which metrics of a device changed since they were
//! last sent (a numeric change within the deadband does not count; a
//! change of quality always does).
//!
//! Owns [`Exceptions`] (the last value sent per metric). Must not know
//! topics, payloads or devices' configs.

use crate::reading::Value;

/// What a metric last said: a value, or null (no good reading).
pub type Sent = Option<Value>;

/// The last value sent of each metric of one device.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    last: Vec<Option<Sent>>,
}

impl Exceptions {
    pub fn new(metrics: usize) -> Exceptions {
        Exceptions {
            last: vec![None; metrics],
        }
    }

    /// Forgets everything sent (a birth sends every metric again).
    pub fn clear(&mut self) {
        self.last.iter_mut().for_each(|l| *l = None);
    }

    /// `true` when `now` differs from what metric `i` last sent by more
    /// than `deadband` (numbers), or at all (other values, null against a
    /// value); always `true` for a metric never sent.
    pub fn changed(&self, i: usize, now: &Sent, deadband: Option<f64>) -> bool {
        let Some(Some(before)) = self.last.get(i) else {
            return true;
        };
        match (before, now) {
            (None, None) => false,
            (Some(a), Some(b)) => differs(a, b, deadband),
            _ => true,
        }
    }

    /// Records that metric `i` sent `now`.
    pub fn record(&mut self, i: usize, now: Sent) {
        if let Some(slot) = self.last.get_mut(i) {
            *slot = Some(now);
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn differs(a: &Value, b: &Value, deadband: Option<f64>) -> bool {
    match (number(a), number(b), deadband) {
        (Some(x), Some(y), Some(d)) if x.is_finite() && y.is_finite() => (x - y).abs() > d,
        _ => a != b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_past_the_deadband_count() {
        let mut e = Exceptions::new(2);
        let v = |f| Some(Value::Float(f));
        assert!(e.changed(0, &v(1.0), Some(0.5)));
        e.record(0, v(1.0));
        assert!(!e.changed(0, &v(1.4), Some(0.5)));
        assert!(e.changed(0, &v(1.6), Some(0.5)));
        assert!(!e.changed(0, &v(1.0), None));
        assert!(e.changed(0, &v(1.0001), None));
        assert!(
            e.changed(0, &None, Some(0.5)),
            "a value going null is a change"
        );
        e.record(1, None);
        assert!(!e.changed(1, &None, None));
        e.clear();
        assert!(e.changed(0, &v(1.0), None));
    }
}
