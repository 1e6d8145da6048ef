//! The in-process link from the embedded broker: QoS 1/2 messages that
//! local clients publish on forwarded topics enter the outbox here.
//!
//! Owns the bridge's rumqttd link and the echo filter. Must not publish
//! locally (the gateway's own publishes go through `broker::publisher`).
//!
//! Echoes: rumqttd ignores MQTT 5 `nolocal` on in-process links and its v4
//! listeners cannot carry a tag in publish properties, so the link also
//! receives the gateway's own publishes (already committed by the intake)
//! and the commands the bridge published locally. Before the gateway
//! publishes a message on a forwarded topic it records a fingerprint of
//! (topic, payload) in [`Echoes`]; the link skips a message whose
//! fingerprint is among the oldest pending ones. Fingerprints older than
//! [`ECHO_TTL`] are forgotten (a publish the broker refused never echoes).
//!
//! QoS: rumqttd hands in-process subscribers every message at the link's
//! subscription QoS, so the QoS a local client used is not visible here:
//! the matching `forward` entry's `qos` decides (0: sent live, 1/2: stored).
//!
//! Window: the local broker acknowledged the client's PUBLISH before this
//! link sees it; the message is committed in the next commit batch
//! (milliseconds; every message the broker has ready is taken into one
//! insert). A crash inside that window loses it. A failed commit (full
//! disk: logged and counted as an I/O error) hands the messages to the
//! uplink's live queue: sent if connected, else counted as dropped.
//!
//! Back-pressure: when the writer falls behind, this link stops reading;
//! rumqttd keeps the messages in its in-memory commit log meanwhile, but
//! only `broker.buffer_per_filter` of them per filter: a burst of local
//! clients' messages that outruns this link by more than that is skipped by
//! rumqttd (it logs "Read cursor start jumped"), after it acknowledged them
//! to the client. Not counted here: rumqttd does not tell the link.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Counters;
use super::config::UplinkConfig;
use super::outbox::{NewMessage, WriteCmd};
use crate::reading::Publish;

/// How long an expected echo is remembered.
pub const ECHO_TTL: Duration = Duration::from_secs(30);
/// Most expected echoes kept (the oldest are forgotten beyond it).
const ECHO_MAX: usize = 100_000;
/// How far into the pending echoes a match is looked for.
const ECHO_SCAN: usize = 256;
/// Most local messages committed in one insert.
const LOCAL_BATCH: usize = 4096;

/// Fingerprints of the gateway's own local publishes on forwarded topics.
#[derive(Clone, Default)]
pub struct Echoes(Arc<Mutex<VecDeque<(u64, Instant)>>>);

fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

impl Echoes {
    /// Records that the gateway is about to publish `p` locally.
    pub fn expect(&self, p: &Publish) {
        let mut q = self
            .0
            .lock()
            .expect("echo lock is never poisoned: no panics inside");
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > ECHO_TTL)
            || q.len() >= ECHO_MAX
        {
            q.pop_front();
        }
        q.push_back((fingerprint(&p.topic, &p.payload), now));
    }

    /// `true` (and forgotten) when `topic`/`payload` is an expected echo.
    fn take(&self, topic: &str, payload: &[u8]) -> bool {
        let f = fingerprint(topic, payload);
        let mut q = self
            .0
            .lock()
            .expect("echo lock is never poisoned: no panics inside");
        match q.iter().take(ECHO_SCAN).position(|(x, _)| *x == f) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Takes forwarded messages from the link until `cancel`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    link: (LinkTx, LinkRx),
    cfg: Arc<UplinkConfig>,
    echoes: Echoes,
    status_topic: String,
    writer: mpsc::Sender<WriteCmd>,
    live: mpsc::Sender<Publish>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    let (mut tx, mut rx) = link;
    for r in &cfg.forward {
        if let Err(e) = tx.subscribe(r.filter.clone()) {
            error!(filter = %r.filter, error = %e, "bridge link cannot subscribe; local clients' messages are not forwarded");
            return;
        }
    }
    loop {
        let first = tokio::select! {
            n = rx.next() => n,
            _ = cancel.cancelled() => break,
        };
        // take every notification that is ready now into one commit
        let mut batch = Vec::new();
        let mut closed = false;
        let mut n = first;
        loop {
            match n {
                Ok(Some(Notification::Forward(f))) => {
                    if let Some(m) =
                        take(&f.publish, &cfg, &echoes, &status_topic, &live, &counters)
                    {
                        batch.push(m);
                    }
                }
                Ok(Some(Notification::Unschedule)) if rx.wake().await.is_err() => closed = true,
                Ok(_) => {}
                Err(e) => {
                    error!(error = %e, "bridge link closed; local clients' messages are no longer forwarded");
                    closed = true;
                }
            }
            if closed || batch.len() >= LOCAL_BATCH {
                break;
            }
            // dropping a pending `LinkRx::next` loses nothing: it takes
            // notifications only when ready
            match super::poll_once(rx.next()) {
                Some(next) => n = next,
                None => break,
            }
        }
        if !batch.is_empty()
            && writer
                .send(WriteCmd::Insert {
                    msgs: batch,
                    done: None,
                })
                .await
                .is_err()
        {
            warn!("outbox writer gone; bridge link stops");
            break;
        }
        if closed {
            break;
        }
    }
}

/// The message to store for a local client's publish, if any: not the
/// status topic, not an echo, on a forwarded topic; QoS 0 rules go live.
fn take(
    p: &rumqttd::protocol::Publish,
    cfg: &UplinkConfig,
    echoes: &Echoes,
    status_topic: &str,
    live: &mpsc::Sender<Publish>,
    counters: &Counters,
) -> Option<NewMessage> {
    let topic = std::str::from_utf8(&p.topic).ok()?;
    if topic == status_topic || echoes.take(topic, &p.payload) {
        return None;
    }
    let rule = cfg.forward_rule(topic)?;
    counters.from_local_clients.fetch_add(1, Relaxed);
    let topic = format!("{}{topic}", rule.prefix);
    if rule.qos.as_u8() == 0 {
        let msg = Publish {
            topic,
            payload: p.payload.clone(),
            qos: rule.qos,
            retain: p.retain,
        };
        if live.try_send(msg).is_err() {
            counters.live_dropped.fetch_add(1, Relaxed);
        }
        return None;
    }
    Some(NewMessage {
        topic,
        payload: p.payload.clone(),
        qos: rule.qos.as_u8(),
        retain: p.retain,
    })
}
