//! `uplink.drain_rate` against a real mosquitto: after an outage the
//! backlog goes up at the rate, while with `drain: live_first` the live
//! readings are not held back; every message still arrives.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::bridge::*;
use crate::upstream::counter;

const RATE: usize = 40;

#[tokio::test]
async fn a_backlog_drains_at_drain_rate_while_live_readings_keep_their_place() {
    let extra = format!("  inflight: 10\n  drain_rate: {RATE}\n  buffer: {{ drain: live_first }}");
    let (_broker, proxy, mut up, mut gw, mut local) = linked("5ms", &extra).await;
    // 300 readings committed while the uplink is down
    let (start, restored_at, _) = outage(&proxy, &mut local, 300).await;
    // what arrives upstream, and when, until the whole backlog is there
    let backlog: BTreeSet<i64> = (start..=start + 300).collect();
    let mut arrivals: Vec<(Instant, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !backlog.iter().all(|v| arrivals.iter().any(|a| a.1 == *v)) {
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain; log:\n{}",
            gw.log_text()
        );
        let m = up.next(SECS).await;
        if m.topic == READING {
            arrivals.push((Instant::now(), counter(&m)));
        }
    }
    assert!(gw.terminate(SECS).success());
    let old: Vec<Instant> = arrivals
        .iter()
        .filter(|a| backlog.contains(&a.1))
        .map(|a| a.0)
        .collect();
    let first = old[0];
    // a bucket of one second, then RATE a second (plus the window of 10
    // in flight at the cut, which the resumed session sends again)
    let in_3s = old
        .iter()
        .filter(|t| **t < first + Duration::from_secs(3))
        .count();
    assert!(
        in_3s <= RATE * 4 + 10,
        "{in_3s} backlog messages in the first 3 s at drain_rate {RATE}"
    );
    let took = *old.last().expect("backlog") - first;
    assert!(
        took >= Duration::from_secs(3),
        "301 backlog messages in {took:?} at drain_rate {RATE}"
    );
    // live readings were not paced: they came at the poll's pace (200/s)
    let live_in_3s = arrivals
        .iter()
        .filter(|a| a.1 > restored_at && a.0 < first + Duration::from_secs(3))
        .count();
    assert!(
        live_in_3s > RATE * 4 + 10,
        "only {live_in_3s} live readings in the first 3 s: paced with the backlog"
    );
}
