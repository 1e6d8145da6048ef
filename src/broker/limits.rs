//! The broker's limits: their values (from `broker:`, [`Limits`]) and the
//! record of each time one is hit ([`Hits`]): a count per limit, shown in
//! `/metrics` (`fieldgate_broker_limit_hits{limit=...}`) and `$SYS`
//! (`$SYS/broker/limits/<limit>`), and one log line per limit at most
//! every [`LOG_EVERY`] (the count of the lines held back goes with the
//! next one). What a client meets past each limit is in `docs/design.md`
//! ("Limits and bad clients").
//!
//! Owns the limit names and their counters. Must not decide anything:
//! the session, router, connection and listener check the limits where
//! they apply and call [`Hits::hit`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tracing::warn;

use crate::log_throttle::LogThrottle;

/// At most one log line per limit in this window.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The broker's limits (from `broker:`), shared by sessions and the router.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_spooled_bytes: u64,
    pub max_inflight: usize,
    /// What one connection may owe its client unsent.
    pub max_client_buffer: usize,
    pub max_topic_levels: usize,
    pub max_subscriptions: usize,
    pub max_retained_messages: usize,
    pub max_retained_bytes: u64,
    pub max_sessions: usize,
    pub max_store_bytes: u64,
    pub session_expiry: Duration,
    pub connect_timeout: Duration,
    /// MQTT 5: the cap of a client's Session Expiry Interval.
    pub max_session_expiry: Duration,
    pub max_topic_alias: u16,
    pub max_keepalive: Option<u16>,
    pub validate_utf8: bool,
    /// QoS 1/2 PUBLISHes a client may have unacknowledged by the broker
    /// (the Receive Maximum announced to MQTT 5 clients).
    pub receive_maximum: u16,
}

#[cfg(test)]
impl Limits {
    /// Small limits for unit tests: `queued` messages in memory.
    pub fn for_tests(queued: usize) -> Limits {
        Limits {
            max_queued_messages: queued,
            max_queued_bytes: 1 << 20,
            max_spooled_bytes: 1 << 20,
            max_inflight: 10,
            max_client_buffer: 1 << 20,
            max_topic_levels: 201,
            max_subscriptions: 100,
            max_retained_messages: 100,
            max_retained_bytes: 1 << 20,
            max_sessions: 100,
            max_store_bytes: 1 << 30,
            session_expiry: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_session_expiry: Duration::from_secs(60),
            max_topic_alias: 10,
            max_keepalive: None,
            validate_utf8: false,
            receive_maximum: 100,
        }
    }
}

/// One limit a client can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A client that does not read its socket: disconnected.
    ClientBuffer,
    /// A topic or filter deeper than `max_topic_levels`: disconnected.
    TopicLevels,
    /// A SUBSCRIBE past `max_subscriptions_per_client`: that filter refused.
    Subscriptions,
    /// A retained publish past `max_retained_messages` / `_bytes`: delivered, not retained.
    Retained,
    /// A new persistent session past `max_sessions`: CONNACK 3.
    Sessions,
    /// A message for a persistent session past `max_store_bytes`: dropped.
    StoreBytes,
    /// A message past a session's `max_spooled_bytes`: dropped.
    SpoolBytes,
    /// A socket closed because newer ones took its place before its CONNECT.
    PendingConnections,
    /// No CONNECT within `connect_timeout`: closed.
    ConnectTimeout,
    /// A login from an address past `login_failures`: refused.
    LoginFailures,
    /// A client's PUBLISH to `$SYS/...`: acknowledged and dropped.
    SysPublish,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::ClientBuffer,
        Limit::TopicLevels,
        Limit::Subscriptions,
        Limit::Retained,
        Limit::Sessions,
        Limit::StoreBytes,
        Limit::SpoolBytes,
        Limit::PendingConnections,
        Limit::ConnectTimeout,
        Limit::LoginFailures,
        Limit::SysPublish,
    ];

    /// The name in `/metrics` and `$SYS`: the config key it comes from.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ClientBuffer => "max_client_buffer",
            Limit::TopicLevels => "max_topic_levels",
            Limit::Subscriptions => "max_subscriptions_per_client",
            Limit::Retained => "max_retained",
            Limit::Sessions => "max_sessions",
            Limit::StoreBytes => "max_store_bytes",
            Limit::SpoolBytes => "max_spooled_bytes",
            Limit::PendingConnections => "max_pending_connections",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::LoginFailures => "login_failures",
            Limit::SysPublish => "sys_publish",
        }
    }

    /// What happened, for the log line.
    fn outcome(self) -> &'static str {
        match self {
            Limit::ClientBuffer => "client does not read its socket: disconnected",
            Limit::TopicLevels => "topic or filter too deep: disconnected",
            Limit::Subscriptions => "too many subscriptions: filter refused",
            Limit::Retained => "retained store full: message delivered, not retained",
            Limit::Sessions => "too many persistent sessions: CONNACK 3",
            Limit::StoreBytes => "broker.db full: message for a persistent session dropped",
            Limit::SpoolBytes => "session spool full: message dropped",
            Limit::PendingConnections => "too many connections without CONNECT: the oldest closed",
            Limit::ConnectTimeout => "no CONNECT in time: closed",
            Limit::LoginFailures => "too many failed logins from this address: refused",
            Limit::SysPublish => "client publish to $SYS dropped",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

/// Counts and throttled log lines per limit.
#[derive(Debug)]
pub struct Hits {
    counts: [AtomicU64; Limit::ALL.len()],
    logs: Mutex<Vec<LogThrottle>>,
}

impl Default for Hits {
    fn default() -> Self {
        Hits {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            logs: Mutex::new(vec![LogThrottle::new(LOG_EVERY); Limit::ALL.len()]),
        }
    }
}

impl Hits {
    /// Counts a hit of `limit` and logs it (throttled); `who` names the
    /// client (client id or address), never a secret.
    pub fn hit(&self, limit: Limit, who: &dyn std::fmt::Display) {
        let i = limit.index();
        self.counts[i].fetch_add(1, Relaxed);
        let ready = {
            let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            logs.get_mut(i).and_then(LogThrottle::ready)
        };
        if let Some(suppressed) = ready {
            warn!(limit = limit.name(), client = %who, suppressed, "broker limit: {}", limit.outcome());
        }
    }

    pub fn count(&self, limit: Limit) -> u64 {
        self.counts[limit.index()].load(Relaxed)
    }

    /// Every limit with its count.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        Limit::ALL
            .iter()
            .map(|l| (l.name(), self.count(*l)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_counts_on_its_own_and_names_its_key() {
        let h = Hits::default();
        h.hit(Limit::TopicLevels, &"c1");
        h.hit(Limit::TopicLevels, &"c1");
        h.hit(Limit::SysPublish, &"c2");
        assert_eq!(h.count(Limit::TopicLevels), 2);
        assert_eq!(h.count(Limit::SysPublish), 1);
        assert_eq!(h.count(Limit::ClientBuffer), 0);
        let names: Vec<_> = h.all().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"max_topic_levels"));
        assert_eq!(names.len(), Limit::ALL.len());
    }
}
