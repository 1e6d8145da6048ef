//! The trend history of every point for the status page, in memory only:
//! the raw readings of the last 2 minutes (at most [`RAW_MAX`] per point, a
//! faster poll thinned to about one a second) and min / avg / max buckets
//! over `http.history` (`http.history_bucket` each); for text points their
//! last [`TEXT_CHANGES`] changes; per device, readings and offline time per
//! bucket.
//!
//! Owns [`Series`] (one point's history, kept beside its last reading in
//! [`crate::recent`]) and [`DeviceTrail`], and the shape set once at start
//! by the wiring ([`configure`]; without it nothing is recorded). Bounded:
//! a numeric point's buffers are allocated once at their full size (8 bytes
//! per raw reading, 20 per bucket: 3,360 bytes with the defaults), values
//! kept as 32-bit floats. Nothing is written to disk: a restart starts
//! empty ([`since_ms`]). Must not import a stage.
//!
//! Every reading of every point comes here (10,000 a second in the Modbus
//! benchmark), so a reading touches only its [`Series`] as a rule: the
//! newest raw reading (which stands in for its step until a step has
//! passed) and the open bucket are kept inline, with the times the next
//! reading needs (the committed reading before the newest, the oldest); the
//! rings behind them are written only when a raw reading is committed
//! (about once a second), something expires, a bucket closes or a late
//! reading lands in a closed bucket. The rings keep their full size above,
//! one slot of each spare, so what they take stays what is said above.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use crate::reading::{Quality, Reading, Value, now_ms};

/// Raw readings kept per point.
pub const RAW_MAX: usize = 120;
/// How far back raw readings go.
pub const RAW_SPAN_MS: i64 = 120_000;
/// A faster poll is thinned to one raw reading per this step.
const RAW_STEP_MS: i64 = RAW_SPAN_MS / RAW_MAX as i64;
/// Changes kept per text point.
pub const TEXT_CHANGES: usize = 8;
/// Buckets at most (`history / history_bucket`), whatever the config says.
pub const MAX_BUCKETS: usize = 1440;

/// How long each bucket is and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub bucket_ms: i64,
    pub buckets: usize,
}

impl Shape {
    /// The shape of `span` in buckets of `bucket` (at least 1 s each, at
    /// most [`MAX_BUCKETS`]).
    pub fn of(span: Duration, bucket: Duration) -> Shape {
        let bucket_ms = i64::try_from(bucket.as_millis())
            .unwrap_or(i64::MAX)
            .max(1000);
        let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        let buckets = usize::try_from(span_ms / bucket_ms)
            .unwrap_or(MAX_BUCKETS)
            .clamp(1, MAX_BUCKETS);
        Shape { bucket_ms, buckets }
    }

    fn index(&self, ts: i64) -> u32 {
        u32::try_from(ts.div_euclid(self.bucket_ms).max(0)).unwrap_or(u32::MAX)
    }

    /// Bytes one numeric point's buffers take.
    pub fn point_bytes(&self) -> usize {
        RAW_MAX * size_of::<Raw>() + self.buckets * size_of::<Bucket>()
    }
}

static SHAPE: OnceLock<(Shape, i64)> = OnceLock::new();

/// Turns recording on with this shape (the first call wins; later calls
/// return the shape in force).
pub fn configure(span: Duration, bucket: Duration) -> Shape {
    SHAPE.get_or_init(|| (Shape::of(span, bucket), now_ms())).0
}

/// The shape in force; `None`: nothing is recorded.
pub fn shape() -> Option<Shape> {
    SHAPE.get().map(|s| s.0)
}

/// Since when the history has data (ms since the epoch), when recording.
pub fn since_ms() -> Option<i64> {
    SHAPE.get().map(|s| s.1)
}

/// One raw reading: ms after the series' base, the value (NaN: a gap).
#[derive(Debug, Clone, Copy)]
struct Raw {
    dt: u32,
    v: f32,
}

/// One bucket: min / avg / max of its good readings (`n == 0`: only gaps).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    idx: u32,
    min: f32,
    max: f32,
    avg: f32,
    n: u32,
}

impl Bucket {
    /// Counts `v` in (a gap, NaN, is not counted).
    fn add(&mut self, v: f32) {
        if v.is_nan() {
            return;
        }
        if self.n == 0 {
            (self.min, self.max, self.avg) = (v, v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.avg += (v - self.avg) / (self.n + 1) as f32;
        }
        self.n = self.n.saturating_add(1);
    }
}

/// A bucket as the API shows it: start (ms), and min / avg / max unless it
/// held no good reading.
pub type BucketOut = (i64, Option<[f64; 3]>);

/// One point's history: 64 bytes that a reading touches, inline beside
/// its last value in [`crate::recent`]; the rings, on the heap behind them,
/// only when a step or a bucket closes.
#[derive(Debug, Default)]
pub struct Series {
    raw: RawRing,
    buckets: BucketRing,
    rings: Box<Rings>,
}

/// The rings of a [`Series`]: what a reading that only replaces the newest
/// raw reading or counts in the open bucket does not touch.
#[derive(Debug, Default)]
struct Rings {
    /// The raw readings before `RawRing::newest`, oldest first (at most
    /// `RAW_MAX - 1`).
    raw: VecDeque<Raw>,
    /// The buckets before `BucketRing::open`, oldest first (at most
    /// `buckets - 1`).
    buckets: VecDeque<Bucket>,
    /// A text point's last changes.
    texts: VecDeque<(i64, Box<str>)>,
}

/// The raw readings: the ring of committed ones and, inline, the newest
/// (which stands in for its step until a step has passed) with the times a
/// reading needs to decide what to do, so that one that only replaces the
/// newest touches no ring memory.
#[derive(Debug, Default)]
struct RawRing {
    /// The time the `dt`s count from.
    base: i64,
    /// The newest reading; `None`: none at all.
    newest: Option<Raw>,
    /// `dt` of `kept.back()`, while `kept` is not empty.
    prev_dt: u32,
    /// `dt` of the oldest reading (`kept.front()`, else `newest`).
    oldest_dt: u32,
    /// `kept.len()`, here so that a reading need not look at `kept`.
    kept_len: u32,
}

impl RawRing {
    /// Adds a reading; `kept` is the ring of the readings before `newest`
    /// (`Rings::raw`). Most readings only replace `newest` (within the
    /// step of the committed reading before it, nothing expiring): that
    /// is done here, the rest in [`RawRing::push_other`].
    #[inline]
    fn push(&mut self, ts: i64, v: f32, kept: &mut VecDeque<Raw>) {
        if let Some(last) = self.newest {
            let dt = ts - self.base;
            let thinned = last.v.is_nan() == v.is_nan() && self.closes_step(last);
            if thinned && (0..=i64::from(u32::MAX)).contains(&dt) && !self.expires(ts) {
                self.newest = Some(Raw { dt: dt as u32, v });
                return;
            }
        }
        self.push_other(ts, v, kept);
    }

    #[inline(never)]
    fn push_other(&mut self, ts: i64, v: f32, kept: &mut VecDeque<Raw>) {
        let fits = ts >= self.base && ts - self.base <= i64::from(u32::MAX);
        if self.newest.is_none() || !fits {
            self.restart(ts, kept);
        }
        let raw = Raw {
            dt: u32::try_from(ts - self.base).unwrap_or(u32::MAX),
            v,
        };
        match self.newest {
            // thinned: the newest of the step is kept
            Some(last) if last.v.is_nan() == v.is_nan() && self.closes_step(last) => {}
            Some(last) => self.commit(last, kept),
            None => self.oldest_dt = raw.dt,
        }
        self.newest = Some(raw);
        self.expire(ts, kept);
    }

    /// Starts again from `ts`, empty.
    fn restart(&mut self, ts: i64, kept: &mut VecDeque<Raw>) {
        if kept.capacity() == 0 {
            // the full size, spare slot included: `Series::heap_bytes`
            kept.reserve_exact(RAW_MAX);
        }
        kept.clear();
        self.kept_len = 0;
        self.newest = None;
        self.base = ts;
    }

    /// Whether `newest` is still within a step of the reading before it.
    fn closes_step(&self, newest: Raw) -> bool {
        self.kept_len > 0 && i64::from(newest.dt) - i64::from(self.prev_dt) < RAW_STEP_MS
    }

    /// Moves `newest` (still in place) into the ring, dropping the oldest
    /// when [`RAW_MAX`] would be passed.
    fn commit(&mut self, newest: Raw, kept: &mut VecDeque<Raw>) {
        if kept.len() + 1 >= RAW_MAX {
            self.pop_oldest(kept);
        }
        kept.push_back(newest);
        self.kept_len = kept.len() as u32;
        self.prev_dt = newest.dt;
    }

    fn pop_oldest(&mut self, kept: &mut VecDeque<Raw>) {
        kept.pop_front();
        self.kept_len = kept.len() as u32;
        if let Some(oldest) = kept.front().or(self.newest.as_ref()) {
            self.oldest_dt = oldest.dt;
        }
    }

    /// Drops the readings older than [`RAW_SPAN_MS`] before `ts` (never
    /// `newest`, which is at `ts`).
    fn expire(&mut self, ts: i64, kept: &mut VecDeque<Raw>) {
        while self.expires(ts) {
            self.pop_oldest(kept);
        }
    }

    /// Whether a kept reading is older than [`RAW_SPAN_MS`] before `ts`.
    fn expires(&self, ts: i64) -> bool {
        self.kept_len > 0 && ts - (self.base + i64::from(self.oldest_dt)) > RAW_SPAN_MS
    }

    fn iter<'a>(&'a self, kept: &'a VecDeque<Raw>) -> impl Iterator<Item = (i64, f32)> + 'a {
        let at = |r: &Raw| (self.base + i64::from(r.dt), r.v);
        kept.iter().chain(&self.newest).map(at)
    }
}

/// The buckets: the ring of closed ones and, inline, the open (newest)
/// one, which takes most readings.
#[derive(Debug, Default)]
struct BucketRing {
    /// The newest bucket; `None`: none at all.
    open: Option<Bucket>,
}

impl BucketRing {
    /// Counts a reading; `kept` is the ring of the buckets before `open`
    /// (`Rings::buckets`). Most readings land in the open bucket: that is
    /// done here (no division, nothing to add or drop), the rest in
    /// [`BucketRing::push_other`].
    #[inline]
    fn push(&mut self, ts: i64, v: f32, shape: Shape, kept: &mut VecDeque<Bucket>) {
        if let Some(b) = &mut self.open {
            let start = i64::from(b.idx).saturating_mul(shape.bucket_ms);
            if ts >= start && ts - start < shape.bucket_ms {
                b.add(v);
                return;
            }
        }
        self.push_other(ts, v, shape, kept);
    }

    #[inline(never)]
    fn push_other(&mut self, ts: i64, v: f32, shape: Shape, kept: &mut VecDeque<Bucket>) {
        if kept.capacity() == 0 {
            // the full size, spare slot included: `Series::heap_bytes`
            kept.reserve_exact(shape.buckets);
        }
        let idx = shape.index(ts);
        if self.open.is_none_or(|b| idx > b.idx) {
            self.open_new(idx, shape, kept);
        }
        let first = idx.saturating_sub(shape.buckets as u32 - 1);
        while kept.front().is_some_and(|b| b.idx < first) {
            kept.pop_front();
        }
        // a late reading lands in its own bucket if that is still kept
        let open = self.open.iter_mut();
        if let Some(b) = open.chain(kept.iter_mut().rev()).find(|b| b.idx == idx) {
            b.add(v);
        }
    }

    /// Closes the open bucket and opens bucket `idx`, dropping the oldest
    /// when `shape.buckets` would be passed.
    fn open_new(&mut self, idx: u32, shape: Shape, kept: &mut VecDeque<Bucket>) {
        let len = kept.len() + usize::from(self.open.is_some());
        if len >= shape.buckets && kept.pop_front().is_none() {
            self.open = None;
        }
        if let Some(closed) = self.open.take() {
            kept.push_back(closed);
        }
        self.open = Some(Bucket {
            idx,
            min: f32::NAN,
            max: f32::NAN,
            avg: f32::NAN,
            n: 0,
        });
    }

    fn iter<'a>(&'a self, kept: &'a VecDeque<Bucket>) -> impl Iterator<Item = &'a Bucket> {
        kept.iter().chain(&self.open)
    }
}

/// The value a reading draws: `None` for text, NaN for a gap.
fn plotted(r: &Reading) -> Option<f32> {
    let v = match &r.value {
        Value::Bool(b) => f32::from(u8::from(*b)),
        Value::Int(i) => *i as f32,
        Value::Float(f) => *f as f32,
        Value::String(_) => return None,
    };
    Some(if r.quality == Quality::Good && v.is_finite() {
        v
    } else {
        f32::NAN
    })
}

/// An `f32` as the `f64` it was written as (0.1, not 0.100000001...).
fn widen(v: f32) -> f64 {
    format!("{v}").parse().unwrap_or(f64::from(v))
}

impl Series {
    /// Adds `r` (with `shape`).
    pub fn record(&mut self, r: &Reading, shape: Shape) {
        match plotted(r) {
            Some(v) => {
                self.raw.push(r.ts, v, &mut self.rings.raw);
                self.buckets.push(r.ts, v, shape, &mut self.rings.buckets);
            }
            None => self.push_text(r),
        }
    }

    /// Marks a gap now (the device went offline), for numeric points.
    pub fn gap(&mut self, ts: i64, shape: Shape) {
        if self.raw.newest.is_some() || self.buckets.open.is_some() {
            self.raw.push(ts, f32::NAN, &mut self.rings.raw);
            self.buckets
                .push(ts, f32::NAN, shape, &mut self.rings.buckets);
        }
    }

    fn push_text(&mut self, r: &Reading) {
        let Value::String(s) = &r.value else {
            return;
        };
        let texts = &mut self.rings.texts;
        if texts.back().is_some_and(|(_, t)| **t == **s) {
            return;
        }
        if texts.len() == TEXT_CHANGES {
            texts.pop_front();
        }
        texts.push_back((r.ts, s.as_str().into()));
    }

    /// The raw readings, oldest first: (ms, value; `None` a gap).
    pub fn raw(&self) -> Vec<(i64, Option<f64>)> {
        self.raw
            .iter(&self.rings.raw)
            .map(|(ts, v)| (ts, (!v.is_nan()).then(|| widen(v))))
            .collect()
    }

    /// The buckets, oldest first.
    pub fn buckets(&self, shape: Shape) -> Vec<BucketOut> {
        self.buckets
            .iter(&self.rings.buckets)
            .map(|b| {
                let start = i64::from(b.idx) * shape.bucket_ms;
                let vals = (b.n > 0).then(|| [widen(b.min), widen(b.avg), widen(b.max)]);
                (start, vals)
            })
            .collect()
    }

    /// A text point's last changes, oldest first.
    pub fn texts(&self) -> Vec<(i64, String)> {
        self.rings
            .texts
            .iter()
            .map(|(t, s)| (*t, s.to_string()))
            .collect()
    }

    /// Bytes this series' buffers hold on the heap: its raw readings,
    /// buckets and texts (not the rings' own 96 bytes).
    pub fn heap_bytes(&self) -> usize {
        let rings = &self.rings;
        rings.raw.capacity() * size_of::<Raw>()
            + rings.buckets.capacity() * size_of::<Bucket>()
            + rings
                .texts
                .iter()
                .map(|(_, s)| s.len() + size_of::<(i64, Box<str>)>())
                .sum::<usize>()
    }
}

/// One device bucket: readings, readings not `good`, ms offline, and the
/// polls the device's source reported (how many, their time in all, the
/// requests in them and those that failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceBucket {
    pub start: i64,
    pub readings: u32,
    pub bad: u32,
    pub offline_ms: u32,
    pub polls: u32,
    pub poll_ms: u32,
    pub requests: u32,
    pub errors: u32,
}

/// One device over the history: readings and offline time per bucket.
#[derive(Debug, Default)]
pub struct DeviceTrail {
    buckets: VecDeque<DeviceBucket>,
    /// Offline since (ms), while offline.
    down_since: Option<i64>,
}

impl DeviceTrail {
    fn bucket(&mut self, ts: i64, shape: Shape) -> &mut DeviceBucket {
        let start = ts.div_euclid(shape.bucket_ms) * shape.bucket_ms;
        if self.buckets.back().is_none_or(|b| b.start < start) {
            if self.buckets.len() >= shape.buckets {
                self.buckets.pop_front();
            }
            self.buckets.push_back(DeviceBucket {
                start,
                readings: 0,
                bad: 0,
                offline_ms: 0,
                polls: 0,
                poll_ms: 0,
                requests: 0,
                errors: 0,
            });
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// Counts a batch of readings.
    pub fn readings(&mut self, batch: &[Reading], shape: Shape) {
        let Some(ts) = batch.last().map(|r| r.ts) else {
            return;
        };
        let bad = batch.iter().filter(|r| r.quality != Quality::Good).count();
        let b = self.bucket(ts, shape);
        b.readings = b.readings.saturating_add(batch.len() as u32);
        b.bad = b.bad.saturating_add(bad as u32);
    }

    /// Counts one poll of the device at `ts`: how long it took, its
    /// requests and how many of them failed.
    pub fn poll(&mut self, ts: i64, took_ms: u32, requests: u32, errors: u32, shape: Shape) {
        let b = self.bucket(ts, shape);
        b.polls = b.polls.saturating_add(1);
        b.poll_ms = b.poll_ms.saturating_add(took_ms);
        b.requests = b.requests.saturating_add(requests);
        b.errors = b.errors.saturating_add(errors);
    }

    /// Notes a state change at `now`.
    pub fn state(&mut self, online: bool, now: i64, shape: Shape) {
        match (online, self.down_since) {
            (false, None) => self.down_since = Some(now),
            (true, Some(_)) => {
                self.close_offline(now, shape);
                self.down_since = None;
            }
            _ => {}
        }
    }

    /// Adds the offline time up to `now` to the buckets it fell in.
    fn close_offline(&mut self, now: i64, shape: Shape) {
        let Some(mut from) = self.down_since else {
            return;
        };
        let oldest = now - shape.bucket_ms * shape.buckets as i64;
        from = from.max(oldest);
        while from < now {
            let end = (from.div_euclid(shape.bucket_ms) + 1) * shape.bucket_ms;
            let upto = end.min(now);
            let b = self.bucket(from, shape);
            b.offline_ms = b
                .offline_ms
                .saturating_add(u32::try_from(upto - from).unwrap_or(u32::MAX));
            from = upto;
        }
        self.down_since = Some(now);
    }

    /// The buckets, oldest first, with the offline time up to `now`.
    pub fn buckets(&mut self, now: i64, shape: Shape) -> Vec<DeviceBucket> {
        if self.down_since.is_some() {
            self.close_offline(now, shape);
        }
        self.buckets.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts: i64, value: Value, quality: Quality) -> Reading {
        Reading {
            device: "d".into(),
            point: "p".into(),
            value,
            unit: None,
            ts,
            quality,
        }
    }

    fn num(ts: i64, v: f64) -> Reading {
        reading(ts, Value::Float(v), Quality::Good)
    }

    const SHAPE: Shape = Shape {
        bucket_ms: 30_000,
        buckets: 120,
    };

    #[test]
    fn the_default_shape_is_an_hour_of_30s_buckets_within_4_kib_a_point() {
        let s = Shape::of(Duration::from_secs(3600), Duration::from_secs(30));
        assert_eq!(s, SHAPE);
        assert_eq!(s.point_bytes(), 3360);
        assert!(s.point_bytes() <= 4096);
        // a bucket shorter than a second is a second; too many are capped
        let fine = Shape::of(Duration::from_secs(86_400), Duration::from_millis(10));
        assert_eq!((fine.bucket_ms, fine.buckets), (1000, MAX_BUCKETS));
    }

    #[test]
    fn a_fast_poll_is_thinned_to_a_reading_a_second_and_two_minutes() {
        let mut s = Series::default();
        // 10 minutes at 5 readings a second
        for i in 0..3000 {
            s.record(&num(1_000_000 + i * 200, i as f64), SHAPE);
        }
        let raw = s.raw();
        assert!(raw.len() <= RAW_MAX, "{}", raw.len());
        assert!(raw.len() >= RAW_MAX - 2, "{}", raw.len());
        let last = raw.last().unwrap();
        assert_eq!(
            *last,
            (1_000_000 + 2999 * 200, Some(2999.0)),
            "the newest is kept"
        );
        assert!(last.0 - raw[0].0 <= RAW_SPAN_MS);
        for w in raw[..raw.len() - 1].windows(2) {
            assert!(w[1].0 - w[0].0 >= RAW_STEP_MS, "{w:?}");
        }
        assert!(
            last.0 - raw[0].0 >= RAW_SPAN_MS - 2 * RAW_STEP_MS,
            "two minutes"
        );
        assert!(s.heap_bytes() <= SHAPE.point_bytes(), "{}", s.heap_bytes());
    }

    #[test]
    fn buckets_hold_min_avg_max_and_an_hour_at_most() {
        let mut s = Series::default();
        let t0 = 30_000 * 1_000_000; // a bucket start
        for (i, v) in [1.0, 5.0, 3.0].into_iter().enumerate() {
            s.record(&num(t0 + i as i64 * 1000, v), SHAPE);
        }
        s.record(&num(t0 + 30_000, 0.1), SHAPE);
        let b = s.buckets(SHAPE);
        assert_eq!(b[0], (t0, Some([1.0, 3.0, 5.0])));
        assert_eq!(b[1], (t0 + 30_000, Some([0.1, 0.1, 0.1])));
        // two hours later only the last hour is kept
        for i in 0..240 {
            s.record(&num(t0 + i * 30_000, 1.0), SHAPE);
        }
        let b = s.buckets(SHAPE);
        assert_eq!(b.len(), 120);
        assert_eq!(b.last().unwrap().0, t0 + 239 * 30_000);
        assert_eq!(b[0].0, t0 + 120 * 30_000);
    }

    #[test]
    fn a_reading_not_good_is_a_gap_not_a_zero() {
        let mut s = Series::default();
        let t0 = 30_000 * 1_000_000;
        s.record(&num(t0, 20.0), SHAPE);
        s.record(&reading(t0 + 1000, Value::Float(0.0), Quality::Bad), SHAPE);
        s.record(
            &reading(t0 + 30_000, Value::Float(0.0), Quality::Stale),
            SHAPE,
        );
        s.record(&num(t0 + 62_000, 21.0), SHAPE);
        let raw = s.raw();
        assert_eq!(
            raw,
            [
                (t0, Some(20.0)),
                (t0 + 1000, None),
                (t0 + 30_000, None),
                (t0 + 62_000, Some(21.0))
            ]
        );
        let b = s.buckets(SHAPE);
        assert_eq!(
            b[0],
            (t0, Some([20.0, 20.0, 20.0])),
            "the bad 0 is not in it"
        );
        assert_eq!(b[1], (t0 + 30_000, None), "a bucket of gaps only");
        assert_eq!(b[2], (t0 + 60_000, Some([21.0, 21.0, 21.0])));
        s.gap(t0 + 63_000, SHAPE);
        assert_eq!(s.raw().last(), Some(&(t0 + 63_000, None)));
    }

    #[test]
    fn text_points_keep_their_last_changes() {
        let mut s = Series::default();
        for (i, t) in ["idle", "idle", "run", "run", "fault"].iter().enumerate() {
            let r = reading(i as i64, Value::String((*t).into()), Quality::Good);
            s.record(&r, SHAPE);
        }
        assert_eq!(
            s.texts(),
            [(0, "idle".into()), (2, "run".into()), (4, "fault".into())]
        );
        assert!(s.raw().is_empty());
        for i in 0..20 {
            let r = reading(10 + i, Value::String(format!("s{i}")), Quality::Good);
            s.record(&r, SHAPE);
        }
        assert_eq!(s.texts().len(), TEXT_CHANGES);
        assert_eq!(s.texts().last().unwrap().1, "s19");
    }

    #[test]
    fn a_clock_step_back_starts_the_raw_readings_again() {
        let mut s = Series::default();
        s.record(&num(5_000_000, 1.0), SHAPE);
        s.record(&num(1_000, 2.0), SHAPE);
        assert_eq!(s.raw(), [(1_000, Some(2.0))]);
    }

    /// The raw readings and buckets kept the plain way, each ring written
    /// at every reading (the algorithm before the newest raw reading and
    /// the open bucket moved inline): the oracle [`Series`] must match.
    #[derive(Default)]
    struct Plain {
        base: i64,
        raw: VecDeque<Raw>,
        buckets: VecDeque<Bucket>,
    }

    impl Plain {
        fn record(&mut self, r: &Reading, shape: Shape) {
            if let Some(v) = plotted(r) {
                self.push_raw(r.ts, v);
                self.push_bucket(r.ts, v, shape);
            }
        }

        fn gap(&mut self, ts: i64, shape: Shape) {
            if !self.raw.is_empty() || !self.buckets.is_empty() {
                self.push_raw(ts, f32::NAN);
                self.push_bucket(ts, f32::NAN, shape);
            }
        }

        fn ts_of(&self, r: &Raw) -> i64 {
            self.base + i64::from(r.dt)
        }

        fn push_raw(&mut self, ts: i64, v: f32) {
            if self.raw.capacity() == 0 {
                self.raw.reserve_exact(RAW_MAX);
            }
            let fits = ts >= self.base && ts - self.base <= i64::from(u32::MAX);
            if self.raw.is_empty() || !fits {
                self.raw.clear();
                self.base = ts;
            }
            let raw = Raw {
                dt: u32::try_from(ts - self.base).unwrap_or(u32::MAX),
                v,
            };
            let n = self.raw.len();
            let same_kind = self.raw.back().is_some_and(|b| b.v.is_nan() == v.is_nan());
            let close =
                n >= 2 && self.ts_of(&self.raw[n - 1]) - self.ts_of(&self.raw[n - 2]) < RAW_STEP_MS;
            if same_kind && close {
                self.raw[n - 1] = raw;
            } else {
                if n == RAW_MAX {
                    self.raw.pop_front();
                }
                self.raw.push_back(raw);
            }
            while self
                .raw
                .front()
                .is_some_and(|f| ts - self.ts_of(f) > RAW_SPAN_MS)
            {
                self.raw.pop_front();
            }
        }

        fn push_bucket(&mut self, ts: i64, v: f32, shape: Shape) {
            if let Some(b) = self.buckets.back_mut() {
                let start = i64::from(b.idx).saturating_mul(shape.bucket_ms);
                if ts >= start && ts - start < shape.bucket_ms {
                    b.add(v);
                    return;
                }
            }
            if self.buckets.capacity() == 0 {
                self.buckets.reserve_exact(shape.buckets);
            }
            let idx = shape.index(ts);
            let newest = self.buckets.back().map(|b| b.idx);
            if newest.is_none_or(|last| idx > last) {
                if self.buckets.len() == shape.buckets {
                    self.buckets.pop_front();
                }
                self.buckets.push_back(Bucket {
                    idx,
                    min: f32::NAN,
                    max: f32::NAN,
                    avg: f32::NAN,
                    n: 0,
                });
            }
            let first = idx.saturating_sub(shape.buckets as u32 - 1);
            while self.buckets.front().is_some_and(|b| b.idx < first) {
                self.buckets.pop_front();
            }
            if let Some(b) = self.buckets.iter_mut().rev().find(|b| b.idx == idx) {
                b.add(v);
            }
        }

        fn raw(&self) -> Vec<(i64, Option<f64>)> {
            self.raw
                .iter()
                .map(|r| (self.ts_of(r), (!r.v.is_nan()).then(|| widen(r.v))))
                .collect()
        }

        fn buckets(&self, shape: Shape) -> Vec<BucketOut> {
            self.buckets
                .iter()
                .map(|b| {
                    let start = i64::from(b.idx) * shape.bucket_ms;
                    let vals = (b.n > 0).then(|| [widen(b.min), widen(b.avg), widen(b.max)]);
                    (start, vals)
                })
                .collect()
        }

        fn heap_bytes(&self) -> usize {
            self.raw.capacity() * size_of::<Raw>() + self.buckets.capacity() * size_of::<Bucket>()
        }
    }

    /// A fixed pseudo-random sequence (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n) as i64
        }

        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }
    }

    /// The next reading of the stream at `*t` (moved on), or `None`: a gap
    /// (the device went offline) at `*t`.
    fn next_reading(rng: &mut Lcg, mode: i64, t: &mut i64) -> Option<Reading> {
        *t += match mode {
            0 => 10 + rng.below(91),       // a fast poll
            1 => 900 + rng.below(201),     // about a second
            _ => 1000 + rng.below(19_001), // slow
        };
        if rng.one_in(400) {
            *t += 30_000 + rng.below(1_000_000); // offline a while
        }
        if rng.one_in(3000) {
            *t += 5 * 3_600_000; // every bucket expires
        }
        if rng.one_in(4000) {
            *t += 5_000_000_000; // past what a raw `dt` holds
        }
        if rng.one_in(800) {
            *t -= rng.below(10_000_000); // the clock steps back
        }
        if rng.one_in(5000) {
            *t = 1000; // back to the epoch: late readings go below it
        }
        if rng.one_in(100) {
            return None;
        }
        let ts = if rng.one_in(25) {
            *t - rng.below(200_000) // late
        } else {
            *t
        };
        let value = match rng.below(40) {
            0 => Value::Float(f64::NAN),
            1 => Value::Bool(rng.one_in(2)),
            2 => Value::Int(rng.below(2000) - 1000),
            3 => Value::String(format!("s{}", rng.below(3))),
            _ => Value::Float((rng.below(20_000) - 10_000) as f64 / 10.0),
        };
        let quality = if rng.one_in(20) {
            Quality::Bad
        } else {
            Quality::Good
        };
        Some(reading(ts, value, quality))
    }

    #[test]
    fn the_inline_newest_reading_and_bucket_keep_what_the_plain_rings_kept() {
        let shapes = [
            SHAPE,
            Shape {
                bucket_ms: 1000,
                buckets: 5,
            },
            Shape {
                bucket_ms: 1000,
                buckets: 1,
            },
        ];
        for (seed, shape) in shapes.into_iter().enumerate() {
            let mut rng = Lcg(seed as u64 + 27);
            let (mut s, mut plain) = (Series::default(), Plain::default());
            let mut t = 1_700_000_000_000;
            let (mut mode, mut full, mut late_in_closed, mut restarts) = (0, 0, 0, 0);
            let mut before = (Vec::new(), Vec::new());
            for step in 0..15_000 {
                if rng.one_in(150) {
                    mode = rng.below(3);
                }
                match next_reading(&mut rng, mode, &mut t) {
                    Some(r) => {
                        s.record(&r, shape);
                        plain.record(&r, shape);
                    }
                    None => {
                        s.gap(t, shape);
                        plain.gap(t, shape);
                    }
                }
                let (raw, buckets) = (s.raw(), s.buckets(shape));
                assert_eq!(raw, plain.raw(), "raw, shape {shape:?}, step {step}");
                assert_eq!(
                    buckets,
                    plain.buckets(shape),
                    "buckets, shape {shape:?}, step {step}"
                );
                assert_eq!(s.heap_bytes() - text_bytes(&s), plain.heap_bytes());
                full += usize::from(raw.len() == RAW_MAX);
                // a late reading counted in a bucket before the open one
                let (old_raw, old_buckets) = &before;
                let n = buckets.len();
                let start = |b: &[BucketOut]| b.first().map(|b| b.0);
                late_in_closed += usize::from(
                    n > 1
                        && old_buckets.len() == n
                        && start(old_buckets) == start(&buckets)
                        && old_buckets[..n - 1] != buckets[..n - 1],
                );
                restarts += usize::from(raw.len() == 1 && old_raw.len() > 1);
                before = (raw, buckets);
            }
            // the stream went through each case
            assert!(full > 0, "the raw ring never full, shape {shape:?}");
            assert!(restarts > 0, "the raw readings never restarted");
            if shape.buckets > 1 {
                assert!(late_in_closed > 0, "no late reading in a closed bucket");
            }
        }
    }

    fn text_bytes(s: &Series) -> usize {
        s.rings
            .texts
            .iter()
            .map(|(_, t)| t.len() + size_of::<(i64, Box<str>)>())
            .sum()
    }

    #[test]
    fn device_trails_count_readings_and_offline_time_per_bucket() {
        let mut d = DeviceTrail::default();
        let t0 = 30_000 * 1_000_000;
        let batch = [
            num(t0 + 1000, 1.0),
            reading(t0 + 1000, Value::Int(0), Quality::Bad),
        ];
        d.readings(&batch, SHAPE);
        d.state(false, t0 + 20_000, SHAPE);
        d.state(true, t0 + 50_000, SHAPE);
        let b = d.buckets(t0 + 70_000, SHAPE);
        assert_eq!(
            b,
            [
                DeviceBucket {
                    start: t0,
                    readings: 2,
                    bad: 1,
                    offline_ms: 10_000,
                    polls: 0,
                    poll_ms: 0,
                    requests: 0,
                    errors: 0,
                },
                DeviceBucket {
                    start: t0 + 30_000,
                    readings: 0,
                    bad: 0,
                    offline_ms: 20_000,
                    polls: 0,
                    poll_ms: 0,
                    requests: 0,
                    errors: 0,
                },
            ]
        );
        d.poll(t0 + 31_000, 12, 3, 1, SHAPE);
        d.poll(t0 + 32_000, 8, 3, 0, SHAPE);
        let b = d.buckets(t0 + 70_000, SHAPE);
        assert_eq!(
            (b[1].polls, b[1].poll_ms, b[1].requests, b[1].errors),
            (2, 20, 6, 1),
            "polls add up in their bucket"
        );
        d.state(false, t0 + 80_000, SHAPE);
        let b = d.buckets(t0 + 95_000, SHAPE);
        assert_eq!(
            b[2],
            DeviceBucket {
                start: t0 + 60_000,
                readings: 0,
                bad: 0,
                offline_ms: 10_000,
                polls: 0,
                poll_ms: 0,
                requests: 0,
                errors: 0,
            }
        );
        assert_eq!(
            b[3],
            DeviceBucket {
                start: t0 + 90_000,
                readings: 0,
                bad: 0,
                offline_ms: 5_000,
                polls: 0,
                poll_ms: 0,
                requests: 0,
                errors: 0,
            }
        );
    }
}
