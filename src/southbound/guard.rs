//! The write guard: what a `.../set` command must pass before the commands
//! task queues it to its device. A writable point may declare `min` / `max`
//! (a value outside is refused) and `max_write_rate` (at most N writes in
//! any window of the period, default [`DEFAULT_RATE`]; EEPROM-backed
//! registers wear, and a flood of writes must not hold the bus).
//!
//! Owns [`WriteRate`] (the `max_write_rate` value), [`WriteLimits`] (a
//! point's declared limits) and [`PointGuard`] (a point's recent writes).
//! Must not talk to devices or the broker: the commands task asks it and
//! words the refusal.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use crate::reading::Value;

/// The rate a writable point gets without `max_write_rate`: 2 per second.
pub const DEFAULT_RATE: WriteRate = WriteRate {
    count: 2,
    per: Duration::from_secs(1),
};

/// The largest count a rate may allow per period (a guard keeps one
/// timestamp per write of its window).
pub const MAX_COUNT: u32 = 1000;

/// `max_write_rate`: at most `count` writes in any window of `per`;
/// written `1/s`, `10/min`, `100/h` or `5/10s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    pub count: u32,
    pub per: Duration,
}

impl WriteRate {
    /// Parses `N/s`, `N/min`, `N/h` or `N/<duration>` (`5/10s`).
    pub fn parse(s: &str) -> Result<WriteRate, String> {
        let hint = "write a count per period, e.g. 1/s, 10/min, 100/h or 5/10s";
        let (n, per) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid rate {s:?}: {hint}"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: {n:?} is not a whole number; {hint}"))?;
        if count == 0 || count > MAX_COUNT {
            return Err(format!(
                "invalid rate {s:?}: the count must be between 1 and {MAX_COUNT}"
            ));
        }
        let per = match per.trim() {
            "s" | "sec" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => humantime::parse_duration(other)
                .map_err(|e| format!("invalid rate {s:?}: period {other:?}: {e}; {hint}"))?,
        };
        if per.is_zero() {
            return Err(format!(
                "invalid rate {s:?}: the period must be longer than 0"
            ));
        }
        Ok(WriteRate { count, per })
    }
}

impl fmt::Display for WriteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per {
            d if d == Duration::from_secs(1) => "s".to_string(),
            d if d == Duration::from_secs(60) => "min".to_string(),
            d if d == Duration::from_secs(3600) => "h".to_string(),
            d => humantime::format_duration(d).to_string(),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for WriteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WriteRate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The limits a writable point declares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteLimits {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub rate: WriteRate,
}

impl WriteLimits {
    /// `0 to 90`, `at least 0`, `at most 90`; `None` without `min`/`max`.
    pub fn range_text(&self) -> Option<String> {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => Some(format!("{lo} to {hi}")),
            (Some(lo), None) => Some(format!("at least {lo}")),
            (None, Some(hi)) => Some(format!("at most {hi}")),
            (None, None) => None,
        }
    }
}

/// Why the guard refused a write; the text goes to `.../set/result`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "point {point}: {value} is outside the allowed range {range} (min/max in the config); nothing was written"
    )]
    OutOfRange {
        point: String,
        value: String,
        range: String,
    },
    #[error(
        "point {point}: written too often (max_write_rate {rate}); nothing was written, the next write is accepted in {wait_ms} ms"
    )]
    TooFast {
        point: String,
        rate: WriteRate,
        wait_ms: u64,
    },
}

impl Refusal {
    /// The `reason` label of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::OutOfRange { .. } => "range",
            Refusal::TooFast { .. } => "rate",
        }
    }
}

/// One writable point's limits and the times of its recent writes (at
/// most `rate.count` of them, the ones inside the window).
#[derive(Debug)]
pub struct PointGuard {
    limits: WriteLimits,
    recent: VecDeque<Instant>,
}

impl PointGuard {
    pub fn new(limits: WriteLimits) -> Self {
        PointGuard {
            limits,
            recent: VecDeque::new(),
        }
    }

    /// Checks a command's value (a number is checked against `min`/`max`;
    /// other values are left to the device's type check) and the rate at
    /// `now`. Does not count the write: see [`PointGuard::record`].
    pub fn check(
        &mut self,
        point: &str,
        value: Option<&Value>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let number = match value {
            Some(Value::Int(i)) => Some(*i as f64),
            Some(Value::Float(f)) => Some(*f),
            _ => None,
        };
        if let (Some(x), Some(range)) = (number, self.limits.range_text()) {
            let low = self.limits.min.is_some_and(|lo| x < lo);
            let high = self.limits.max.is_some_and(|hi| x > hi);
            if low || high || x.is_nan() {
                return Err(Refusal::OutOfRange {
                    point: point.to_string(),
                    value: format!("{x}"),
                    range,
                });
            }
        }
        let rate = self.limits.rate;
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= rate.per)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= rate.count as usize
            && let Some(oldest) = self.recent.front()
        {
            let wait = rate.per.saturating_sub(now.duration_since(*oldest));
            return Err(Refusal::TooFast {
                point: point.to_string(),
                rate,
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            });
        }
        Ok(())
    }

    /// Counts a write handed to the device at `now`.
    pub fn record(&mut self, now: Instant) {
        if self.recent.len() >= self.limits.rate.count as usize {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        for (text, count, secs, shown) in [
            ("1/s", 1, 1, "1/s"),
            ("10/min", 10, 60, "10/min"),
            (" 100 / h ", 100, 3600, "100/h"),
            ("5/10s", 5, 10, "5/10s"),
            ("2/sec", 2, 1, "2/s"),
        ] {
            let r = WriteRate::parse(text).unwrap();
            assert_eq!(
                (r.count, r.per),
                (count, Duration::from_secs(secs)),
                "{text}"
            );
            assert_eq!(r.to_string(), shown);
        }
        for bad in [
            "", "fast", "0/s", "1.5/s", "-1/s", "1/", "1/parsec", "1/0s", "1001/s",
        ] {
            assert!(WriteRate::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(DEFAULT_RATE.to_string(), "2/s");
    }

    fn guard(min: Option<f64>, max: Option<f64>, rate: &str) -> PointGuard {
        PointGuard::new(WriteLimits {
            min,
            max,
            rate: WriteRate::parse(rate).unwrap(),
        })
    }

    #[test]
    fn values_outside_min_max_are_refused_naming_the_range() {
        let mut g = guard(Some(0.0), Some(90.0), "100/s");
        let now = Instant::now();
        for ok in [Value::Int(0), Value::Float(90.0), Value::Int(45)] {
            assert_eq!(g.check("sp", Some(&ok), now), Ok(()));
        }
        for bad in [Value::Int(-1), Value::Float(90.5), Value::Float(f64::NAN)] {
            let e = g.check("sp", Some(&bad), now).unwrap_err();
            assert_eq!(e.reason(), "range");
            assert!(e.to_string().contains("allowed range 0 to 90"), "{e}");
        }
        // not a number: the device's type check words that refusal
        assert_eq!(g.check("sp", Some(&Value::Bool(true)), now), Ok(()));
        assert_eq!(g.check("sp", None, now), Ok(()));
        let mut low = guard(Some(-5.5), None, "1/s");
        let e = low.check("t", Some(&Value::Int(-6)), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "point t: -6 is outside the allowed range at least -5.5 (min/max in the config); nothing was written"
        );
    }

    #[test]
    fn at_most_count_writes_in_any_window() {
        let mut g = guard(None, None, "2/s");
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        for t in [0, 100] {
            assert_eq!(g.check("p", None, ms(t)), Ok(()));
            g.record(ms(t));
        }
        let e = g.check("p", None, ms(400)).unwrap_err();
        assert_eq!(e.reason(), "rate");
        assert_eq!(
            e,
            Refusal::TooFast {
                point: "p".into(),
                rate: DEFAULT_RATE,
                wait_ms: 600
            }
        );
        // a refused write is not counted: the window frees at 1000 ms
        assert_eq!(g.check("p", None, ms(1000)), Ok(()));
        g.record(ms(1000));
        assert!(g.check("p", None, ms(1050)).is_err());
        assert_eq!(g.check("p", None, ms(1100)), Ok(()));
    }
}
