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
