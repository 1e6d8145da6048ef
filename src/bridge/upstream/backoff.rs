//! The reconnect backoff of the uplink (`uplink.reconnect`), as the AWS,
//! Azure and HiveMQ client SDKs do it, so a fleet that lost its broker at
//! once does not come back at once:
//!
//! - full jitter: the delay is uniform between zero and the current cap;
//!   the cap doubles from `min` with every failed try, up to `max`;
//! - the cap goes back to `min` only after a connection stayed up for
//!   `stable`: a broker that accepts and then drops every connection does
//!   not get a reconnect storm;
//! - a refused CONNACK (bad credentials, not authorised) waits at the
//!   maximum: between `max / 2` and `max`. Retrying sooner cannot help.
//!
//! Owns the attempt count and the clock readings. Must not do I/O.

use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use crate::bridge::config::ReconnectPolicy;

/// Why the last connection ended, as far as the backoff cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unreachable, dropped, timed out: back off and try again.
    Lost,
    /// The broker answered CONNACK with a refusal.
    Refused,
}

/// Where the backoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Failed tries since the cap was last reset.
    Failing { attempt: u32 },
    /// Connected since this instant; `attempt` tries failed before it.
    Up { since: Instant, attempt: u32 },
}

/// The reconnect backoff of one link.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: ReconnectPolicy,
    phase: Phase,
}

impl Backoff {
    pub fn new(policy: ReconnectPolicy) -> Backoff {
        Backoff {
            policy,
            phase: Phase::Failing { attempt: 0 },
        }
    }

    /// The connection is up (CONNACK accepted) at `now`.
    pub fn connected(&mut self, now: Instant) {
        let attempt = self.attempt();
        self.phase = Phase::Up {
            since: now,
            attempt,
        };
    }

    /// The connection failed or ended at `now`: the delay before the next try.
    pub fn failed(&mut self, now: Instant, why: Failure) -> Duration {
        let attempt = match self.phase {
            Phase::Up { since, .. } if now.duration_since(since) >= self.policy.stable.get() => 0,
            Phase::Up { attempt, .. } | Phase::Failing { attempt } => attempt,
        };
        self.phase = Phase::Failing {
            attempt: attempt.saturating_add(1),
        };
        let max = self.policy.max.get();
        let mut rng = rand::rng();
        match why {
            Failure::Refused => max.mul_f64(rng.random_range(0.5..=1.0)),
            Failure::Lost => self.cap(attempt).mul_f64(rng.random_range(0.0..=1.0)),
        }
    }

    /// The cap of try `attempt` (0-based): `min * 2^attempt`, at most `max`.
    pub fn cap(&self, attempt: u32) -> Duration {
        self.policy
            .min
            .get()
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.policy.max.get())
    }

    /// Failed tries counted towards the cap.
    pub fn attempt(&self) -> u32 {
        match self.phase {
            Phase::Failing { attempt } | Phase::Up { attempt, .. } => attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimeSpan as D;

    fn policy() -> ReconnectPolicy {
        ReconnectPolicy {
            min: D::from_secs(1),
            max: D::from_secs(120),
            stable: D::from_secs(30),
        }
    }

    #[test]
    fn delays_are_uniform_between_zero_and_a_cap_that_doubles_up_to_max() {
        let b = Backoff::new(policy());
        let caps: Vec<u64> = (0..10).map(|a| b.cap(a).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        // 20,000 delays at the maximum cap: full jitter over [0, 120 s]
        let now = Instant::now();
        let mut b = Backoff::new(policy());
        for _ in 0..8 {
            b.failed(now, Failure::Lost);
        }
        let n = 20_000;
        let delays: Vec<f64> = (0..n)
            .map(|_| b.failed(now, Failure::Lost).as_secs_f64())
            .collect();
        assert!(delays.iter().all(|d| (0.0..=120.0).contains(d)));
        let mean = delays.iter().sum::<f64>() / n as f64;
        assert!((mean - 60.0).abs() < 2.0, "mean {mean}");
        // each tenth of the range holds about a tenth of the delays
        let mut deciles = [0usize; 10];
        for d in &delays {
            deciles[((d / 12.0) as usize).min(9)] += 1;
        }
        for (i, c) in deciles.iter().enumerate() {
            let share = *c as f64 / n as f64;
            assert!((0.08..0.12).contains(&share), "tenth {i}: {share}");
        }
    }

    #[test]
    fn the_cap_resets_only_after_a_stable_connection() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy());
        for _ in 0..5 {
            b.failed(t0, Failure::Lost);
        }
        assert_eq!(b.attempt(), 5);
        // up for 10 s, then dropped: not stable, the cap keeps growing
        b.connected(t0);
        let d = b.failed(t0 + Duration::from_secs(10), Failure::Lost);
        assert!(d <= b.cap(5));
        assert_eq!(b.attempt(), 6);
        // up for 30 s: stable, the next delay is within `min` again
        b.connected(t0 + Duration::from_secs(20));
        let d = b.failed(t0 + Duration::from_secs(50), Failure::Lost);
        assert!(d <= Duration::from_secs(1), "{d:?}");
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn a_refused_connack_waits_at_the_maximum() {
        let now = Instant::now();
        let mut b = Backoff::new(policy());
        for _ in 0..1000 {
            let d = b.failed(now, Failure::Refused);
            assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(120));
        }
    }
}
