//! `uplink.drain_rate`: a token bucket that paces the rows the forwarder
//! sends from the outbox, so a fleet that comes back after an outage does
//! not pour its backlogs into the broker at once (AWS IoT Core allows 100
//! publishes/s per connection). With `drain: live_first` the rows
//! committed since the connect (live readings) are not paced: they keep
//! their place beside the drain. The bucket holds one second of messages,
//! so a commit window's batch goes out in one piece.
//!
//! Owns the tokens and the clock readings. Must not do I/O.

use std::time::Duration;

use tokio::time::Instant;

/// The pacing of one forwarder.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    /// Messages per second.
    rate: f64,
    tokens: f64,
    at: Instant,
    /// The last `fill` was held back: wake it when a token is due.
    blocked: bool,
}

impl Pace {
    pub(super) fn new(rate: u32, now: Instant) -> Pace {
        Pace {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(rate.max(1)),
            at: now,
            blocked: false,
        }
    }

    /// Takes a token for one message; `false` (and blocked) when none is left.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.blocked = false;
            true
        } else {
            self.blocked = true;
            false
        }
    }

    /// A `fill` starts: it blocks the pace again only if it is held back.
    pub(super) fn unblock(&mut self) {
        self.blocked = false;
    }

    pub(super) fn blocked(&self) -> bool {
        self.blocked
    }

    /// When the next token is due.
    pub(super) fn next_token(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / self.rate)
    }
}

/// Until the next token, while `pace` is blocked; for ever otherwise.
pub(super) async fn ready(pace: &Option<Pace>) {
    match pace {
        Some(p) if p.blocked() => tokio::time::sleep_until(p.next_token()).await,
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_messages_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(100, t0);
        let burst = (0..1000).take_while(|_| p.take(t0)).count();
        assert_eq!(burst, 100);
        assert!(p.blocked());
        assert_eq!(p.next_token(), t0 + Duration::from_millis(10));
        // ten seconds later: 1,000 more tokens came, the bucket keeps 100
        let t1 = t0 + Duration::from_secs(10);
        let n = (0..1000).take_while(|_| p.take(t1)).count();
        assert_eq!(n, 100);
        // over 5 s, one every 10 ms: 500 (one may be a rounding short)
        let sent = (1..=5000u64)
            .filter(|ms| p.take(t1 + Duration::from_millis(*ms)))
            .count();
        assert!((499..=500).contains(&sent), "{sent}");
    }
}
