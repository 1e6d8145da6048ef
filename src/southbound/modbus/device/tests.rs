use super::*;

fn poller(yaml: &str) -> Poller {
    let cfg: super::super::ModbusTcpConfig = serde_yaml_ng::from_str(yaml).expect("yaml");
    Poller::new(&cfg.name, &cfg.common())
}

#[test]
fn backoff_doubles_from_poll_up_to_the_cap_with_jitter() {
    let mut p = poller("{name: d, address: 'h:502', poll: 2s, backoff_max: 10s}");
    let mut lows = Vec::new();
    for failures in 1..=6 {
        p.failures = failures;
        let full = Duration::from_secs(2)
            .saturating_mul(1 << (failures - 1))
            .min(Duration::from_secs(10));
        let waits: Vec<Duration> = (0..200).map(|_| p.backoff()).collect();
        assert!(
            waits.iter().all(|w| *w >= full / 2 && *w <= full),
            "{failures}: {waits:?}"
        );
        lows.push(*waits.iter().min().expect("waits"));
        // jitter: not all the same
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "{failures}: no jitter"
        );
    }
    assert!(
        lows[4] >= Duration::from_secs(5),
        "capped at backoff_max: {lows:?}"
    );
}

#[test]
fn backoff_starts_at_half_a_second_for_fast_polls() {
    let mut p = poller("{name: d, address: 'h:502', poll: 50ms}");
    p.failures = 1;
    let w = p.backoff();
    assert!(
        w >= Duration::from_millis(250) && w <= Duration::from_millis(500),
        "{w:?}"
    );
}
