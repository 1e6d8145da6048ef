//! Failed logins per client address (`broker.login_failures`): after
//! `max` failures within `per` of the first, that address is refused for
//! the rest of the period without its password being checked, on MQTT and
//! on the status page alike. Bounded: at most [`MAX_ADDRESSES`] addresses
//! are tracked; past that the oldest periods are forgotten first.
//!
//! Owns the failure counts only. Must not check passwords (that is
//! `auth.rs`) nor log (callers count the hit in `limits`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
pub const MAX_ADDRESSES: usize = 4096;

/// One address's current period.
#[derive(Debug, Clone, Copy)]
struct Period {
    started: Instant,
    failures: u32,
}

/// See the module doc.
#[derive(Debug)]
pub struct LoginGuard {
    max: u32,
    per: Duration,
    periods: Mutex<HashMap<IpAddr, Period>>,
}

impl LoginGuard {
    pub fn new(max: u32, per: Duration) -> LoginGuard {
        LoginGuard {
            max: max.max(1),
            per,
            periods: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Period>> {
        self.periods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `addr` has used up its failures for the current period.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> bool {
        self.lock()
            .get(&addr)
            .is_some_and(|p| now.duration_since(p.started) < self.per && p.failures >= self.max)
    }

    /// Counts a failed login of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut periods = self.lock();
        if periods.len() >= MAX_ADDRESSES && !periods.contains_key(&addr) {
            let per = self.per;
            periods.retain(|_, p| now.duration_since(p.started) < per);
            if periods.len() >= MAX_ADDRESSES
                && let Some(oldest) = periods
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(a, _)| *a)
            {
                periods.remove(&oldest);
            }
        }
        let p = periods.entry(addr).or_insert(Period {
            started: now,
            failures: 0,
        });
        if now.duration_since(p.started) >= self.per {
            *p = Period {
                started: now,
                failures: 0,
            };
        }
        p.failures = p.failures.saturating_add(1);
    }

    /// A successful login clears the address's count.
    pub fn succeeded(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn an_address_is_refused_after_max_failures_until_the_period_ends() {
        let g = LoginGuard::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!g.blocked(ip(1), t0));
            g.failed(ip(1), t0);
        }
        assert!(g.blocked(ip(1), t0 + Duration::from_secs(59)));
        assert!(!g.blocked(ip(2), t0), "other addresses are not affected");
        assert!(
            !g.blocked(ip(1), t0 + Duration::from_secs(60)),
            "a new period"
        );
    }

    #[test]
    fn a_success_clears_the_count_and_the_table_stays_bounded() {
        let g = LoginGuard::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        g.failed(ip(1), t0);
        g.succeeded(ip(1));
        g.failed(ip(1), t0);
        assert!(!g.blocked(ip(1), t0));
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let a = IpAddr::from(i.to_be_bytes());
            g.failed(a, t0);
        }
        assert!(g.lock().len() <= MAX_ADDRESSES);
    }
}
