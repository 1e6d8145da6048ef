//! Where the node publishes ([`Sink`]: the embedded broker, or its own
//! upstream session) and the upstream session's state: connected or
//! waiting to reconnect (backoff 1 s doubling to 30 s, back to 1 s once
//! connected), and which stored history rows wait for a PUBACK.
//!
//! Owns [`Sink`] and [`Link`]. Must not decide what to send: the task does.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::uplink::{Endpoint, LinkEvent, Session, events};
use crate::broker::BrokerHandle;
use crate::reading::Publish;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where the node publishes.
pub enum Sink {
    /// The embedded broker, in-process.
    Local(BrokerHandle),
    /// Its own session on the upstream broker.
    Uplink(Box<Link>),
}

/// Stored history rows `(first id, last id)` one message carries.
pub type Rows = (i64, i64);

/// The upstream session (target uplink).
pub struct Link {
    endpoint: Endpoint,
    /// NCMD, DCMD, STATE.
    filters: Vec<String>,
    session: Option<Session>,
    events: mpsc::Receiver<LinkEvent>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// History messages published at QoS 1 not yet given a packet id, in
    /// the order published; then by packet id until their PUBACK.
    awaiting: VecDeque<Rows>,
    inflight: HashMap<u16, Rows>,
}

impl Link {
    /// A link that connects at once.
    pub fn new(endpoint: Endpoint, filters: Vec<String>) -> Link {
        let (_, rx) = events();
        Link {
            endpoint,
            filters,
            session: None,
            events: rx,
            retry_at: Some(Instant::now()),
            backoff: BACKOFF_MIN,
            awaiting: VecDeque::new(),
            inflight: HashMap::new(),
        }
    }

    /// When to connect again, while there is no session.
    pub fn retry_at(&self) -> Option<Instant> {
        self.session.is_none().then_some(self.retry_at).flatten()
    }

    /// A new session with `will` (its NDEATH).
    pub fn connect(&mut self, will: Publish) {
        let (tx, rx) = events();
        self.session = Some(Session::connect(
            &self.endpoint,
            will,
            self.filters.clone(),
            tx,
        ));
        self.events = rx;
        self.retry_at = None;
    }

    /// The session's next event; never, without a session.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        if self.session.is_none() {
            return std::future::pending().await;
        }
        self.events.recv().await
    }

    pub fn connected(&mut self) {
        self.backoff = BACKOFF_MIN;
    }

    /// A history message carrying `rows` is published at QoS 1.
    pub fn awaiting(&mut self, rows: Rows) {
        self.awaiting.push_back(rows);
    }

    /// The next QoS 1 publish went out as `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(rows) = self.awaiting.pop_front() {
            self.inflight.insert(pkid, rows);
        }
    }

    /// The rows `pkid`'s PUBACK confirms.
    pub fn acked(&mut self, pkid: u16) -> Option<Rows> {
        self.inflight.remove(&pkid)
    }

    /// The session ended: what was in flight is forgotten (still stored,
    /// sent again), the next try after the backoff.
    pub fn down(&mut self, why: &str) {
        warn!(error = why, retry_in = ?self.backoff, "Sparkplug upstream session down; storing data");
        self.session = None;
        self.awaiting.clear();
        self.inflight.clear();
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Ends the session cleanly (after an explicit NDEATH).
    pub async fn disconnect(&self) {
        if let Some(s) = &self.session {
            s.disconnect().await;
        }
    }
}

impl Sink {
    /// Publishes `p`; `false` when it could not be (an invalid topic, no
    /// upstream session).
    pub async fn publish(&self, p: Publish) -> bool {
        match self {
            Sink::Local(handle) => handle.publish(p).await,
            Sink::Uplink(l) => match &l.session {
                Some(s) => s.publish(p).await,
                None => false,
            },
        }
    }

    /// The upstream link, with target uplink.
    pub fn link(&mut self) -> Option<&mut Link> {
        match self {
            Sink::Uplink(l) => Some(l),
            Sink::Local(_) => None,
        }
    }
}
