//! The in-process API: how the gateway itself publishes into the broker
//! and subscribes to it (no TCP loopback, no copy per subscriber), and
//! where the bridge registers its intake.
//!
//! Owns [`BrokerHandle`] (which is also the ports leaf's [`Watch`], for
//! ops) and the local subscriber pumps. Must not know
//! about devices, rules or the outbox: it moves [`Publish`]es and
//! [`Message`]s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::message::{Message, MessageProps};
use super::router::{Intake, Router};
use super::session::{Attached, Cell, Outgoing, Session};
use super::stats::Snapshot;
use super::subscription::SubOpts;
use super::topics::{valid_filter, valid_topic};
use crate::ports::Watch;
use crate::reading::{Publish, Qos};

/// Generation of in-process sessions (never taken over).
const LOCAL_GENERATION: u64 = u64::MAX;

/// A cheap, clonable handle on the running broker.
#[derive(Clone)]
pub struct BrokerHandle {
    pub(crate) router: Arc<Router>,
}

/// `true` when the broker accepts `topic` for publishing.
pub fn valid_publish_topic(topic: &str) -> bool {
    valid_topic(topic) && topic.len() <= 65_535 && !topic.contains('\0')
}

impl BrokerHandle {
    /// Publishes as the gateway: routed to every matching subscriber (and
    /// retained when asked), waiting for room like any publisher. `false`
    /// when the topic is not a valid MQTT topic name (nothing published).
    pub async fn publish(&self, p: Publish) -> bool {
        if !valid_publish_topic(&p.topic) {
            return false;
        }
        self.publish_valid(p).await;
        true
    }

    /// [`Self::publish`] of a publish whose topic the caller found
    /// [`valid_publish_topic`] (not checked again).
    pub async fn publish_valid(&self, p: Publish) {
        let msg = Message::new(p.topic.into(), p.payload, p.qos.as_u8(), p.retain);
        super::stats::add(&self.router.stats.publish_received, 1);
        self.router.publish(msg).await;
    }

    /// [`Self::publish`] with the MQTT 5 request/response properties passed
    /// on to subscribers (the bridge's commands from an MQTT 5 uplink).
    pub async fn publish_request(
        &self,
        p: Publish,
        response_topic: Option<String>,
        correlation_data: Option<bytes::Bytes>,
        user: Vec<(String, String)>,
    ) -> bool {
        if !valid_publish_topic(&p.topic) {
            return false;
        }
        let mut msg = Message::new(p.topic.into(), p.payload, p.qos.as_u8(), p.retain);
        let props = MessageProps {
            response_topic,
            correlation_data,
            user,
            ..MessageProps::default()
        };
        if !props.is_empty() {
            msg.props = Some(Arc::new(props));
        }
        super::stats::add(&self.router.stats.publish_received, 1);
        self.router.publish(msg).await;
        true
    }

    /// Registers the bridge's intake (see [`Intake`]).
    pub fn set_intake(&self, intake: Arc<dyn Intake>) {
        self.router.set_intake(intake);
    }

    /// An in-process subscriber named `name`: messages matching `filters`
    /// arrive on the returned channel (bounded by `capacity`; when it is
    /// full, the broker's queue for this subscriber fills and the usual
    /// drop policy applies). Messages keep the publisher's QoS and retain
    /// flag. Invalid filters are skipped with a warning.
    pub fn subscribe(
        &self,
        name: &str,
        filters: &[String],
        capacity: usize,
    ) -> mpsc::Receiver<Message> {
        self.subscribe_as(name, filters, capacity, |m| m)
    }

    /// [`Self::subscribe`], each message made a `T` by `into` on its way
    /// into the channel.
    fn subscribe_as<T: Send + 'static>(
        &self,
        name: &str,
        filters: &[String],
        capacity: usize,
        into: fn(Message) -> T,
    ) -> mpsc::Receiver<T> {
        let id: Arc<str> = format!("$local/{name}").into();
        let mut s = Session::new(id, false);
        s.internal = true;
        s.attach(Attached {
            generation: LOCAL_GENERATION,
            kick: CancellationToken::new(),
        });
        let cell = Cell::new(s);
        let valid: Vec<(String, SubOpts)> = filters
            .iter()
            .filter(|f| {
                let ok = valid_filter(f);
                if !ok {
                    warn!(filter = %f, subscriber = name, "invalid filter not subscribed");
                }
                ok
            })
            .map(|f| (f.clone(), SubOpts::qos(0)))
            .collect();
        self.router.subscribe(&cell, valid, None);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(pump(cell, self.router.clone(), tx, into));
        rx
    }

    /// The broker's counters now.
    pub fn stats(&self) -> Snapshot {
        let mut s = self.router.stats.snapshot();
        s.store_failed_commits = self
            .router
            .store
            .as_ref()
            .map_or(0, |st| st.failed_commits());
        s
    }

    /// Waits until every connected client's queue is written out (at most
    /// `within`): for the final status message at shutdown.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        for cell in self.router.attached() {
            while !cell.lock().drained() && tokio::time::Instant::now() < deadline {
                let _ = tokio::time::timeout_at(deadline, cell.space.notified()).await;
            }
        }
    }
}

impl Watch for BrokerHandle {
    fn watch(&self, name: &str, filters: &[String], capacity: usize) -> mpsc::Receiver<Publish> {
        self.subscribe_as(name, filters, capacity, |m| Publish {
            topic: m.topic.to_string(),
            payload: m.payload,
            qos: Qos::from_u8(m.qos).unwrap_or(Qos::AtMostOnce),
            retain: m.retain,
        })
    }
}

/// Moves an in-process session's queue into its channel.
async fn pump<T>(
    cell: Arc<Cell>,
    router: Arc<Router>,
    tx: mpsc::Sender<T>,
    into: fn(Message) -> T,
) {
    let mut out = Vec::new();
    loop {
        let wake = cell.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        cell.lock().take(&router.limits, &mut out, 256);
        if out.is_empty() {
            cell.space.notify_waiters();
            wake.await;
            continue;
        }
        cell.space.notify_waiters();
        for o in out.drain(..) {
            if let Outgoing::Publish { d, .. } = o
                && tx.send(into(d.msg)).await.is_err()
            {
                return; // the subscriber is gone
            }
        }
    }
}
