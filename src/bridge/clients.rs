//! The local clients' publishes ([`ClientPublishes`], the bridge's
//! `Intake` with the broker): QoS 1/2 messages that clients of the
//! embedded broker publish on forwarded topics are committed to the outbox
//! *before* the broker acknowledges them (PUBACK / PUBREC), so a SIGKILL at
//! any moment loses no acknowledged message.
//!
//! The broker calls [`ClientPublishes::offer`] for every PUBLISH of a client,
//! before it routes it; for QoS 1/2 the returned future resolves when the
//! row is committed (or, if the commit failed, handed to the live queue),
//! and the acknowledgement waits for it. Every
//! offer joins one pending batch, in arrival order, and one task commits
//! each batch with one insert (group commit). A message that several
//! `forward` entries match is committed once, under the first entry.
//!
//! The forward entry is `route.rs`'s: QoS upstream = min(publisher's QoS,
//! the entry's `qos`); an entry with
//! `qos: 0` sends live and never buffers; the retain flag is the
//! publisher's. The gateway status topic is not taken (the bridge says
//! `online`/`offline` upstream itself). The gateway's own publishes never
//! pass here: the broker's in-process API does not call the intake.
//!
//! Owns the pending batch and its task. Must not publish locally.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::counters::Counters;
use super::outbox::{NewMessage, RowProps, WriteCmd};
use super::route::Route;
use crate::broker::Message;
use crate::reading::Publish;

type Waiter = oneshot::Sender<bool>;

struct Inner {
    route: Route,
    live: mpsc::Sender<Publish>,
    counters: Arc<Counters>,
    batch: Mutex<Vec<(NewMessage, Waiter)>>,
    /// Set under the `batch` lock: no offer joins a batch any more.
    closed: AtomicBool,
    notify: Notify,
}

/// The local clients' door into the outbox: the broker's `Intake`.
#[derive(Clone)]
pub struct ClientPublishes(Arc<Inner>);

impl ClientPublishes {
    /// The intake and its commit task (ends with `cancel`, after
    /// committing what was offered before).
    pub fn start(
        route: Route,
        writer: mpsc::Sender<WriteCmd>,
        live: mpsc::Sender<Publish>,
        counters: Arc<Counters>,
        cancel: CancellationToken,
    ) -> (ClientPublishes, tokio::task::JoinHandle<()>) {
        let inner = Arc::new(Inner {
            route,
            live,
            counters,
            batch: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let task = tokio::spawn(commit_loop(inner.clone(), writer, cancel));
        (ClientPublishes(inner), task)
    }

    /// Takes no new message (the gateway stops): an offer from now on
    /// resolves `false`, so the broker closes that client's connection
    /// without acknowledging, and the client sends it again after the
    /// restart. What was offered before is still committed.
    pub fn close(&self) {
        let _batch = self.0.batch.lock().unwrap_or_else(|e| e.into_inner());
        self.0.closed.store(true, Relaxed);
    }
}

impl crate::broker::Intake for ClientPublishes {
    fn offer(&self, m: &Message) -> Option<Pin<Box<dyn Future<Output = bool> + Send>>> {
        let i = &self.0;
        let (mut msg, rule) = i.route.message(&m.topic, &m.payload, m.qos, m.retain)?;
        i.counters.from_local_clients.fetch_add(1, Relaxed);
        msg.props = request_props(m, &rule.prefix);
        if msg.qos == 0 {
            if i.live.try_send(msg.to_publish()).is_err() {
                i.counters.live_dropped.fetch_add(1, Relaxed);
            }
            return None;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut batch = i.batch.lock().unwrap_or_else(|e| e.into_inner());
            if i.closed.load(Relaxed) {
                return Some(Box::pin(async { false }));
            }
            batch.push((msg, tx));
        }
        i.notify.notify_one();
        // a gone writer: the broker does not acknowledge, the client resends
        Some(Box::pin(async move { rx.await.unwrap_or(false) }))
    }
}

async fn commit_loop(inner: Arc<Inner>, writer: mpsc::Sender<WriteCmd>, cancel: CancellationToken) {
    loop {
        let stop = tokio::select! {
            _ = inner.notify.notified() => false,
            _ = cancel.cancelled() => true,
        };
        let batch = {
            let mut batch = inner.batch.lock().unwrap_or_else(|e| e.into_inner());
            if stop {
                // the last batch: nothing joins after it
                inner.closed.store(true, Relaxed);
            }
            std::mem::take(&mut *batch)
        };
        if !batch.is_empty() {
            let (msgs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let (cmd, committed) = WriteCmd::insert_now(msgs);
            if writer.send(cmd).await.is_err() {
                warn!("outbox writer gone; local clients' messages are not acknowledged");
                return;
            }
            // the writer answers in commit order; fan the answer out
            tokio::spawn(async move {
                // committed, or a failed commit that went to the live queue
                let handled = committed.await.is_ok();
                for w in waiters {
                    let _ = w.send(handled);
                }
            });
        }
        if stop {
            return;
        }
    }
}
/// The MQTT 5 request/response properties of a local client's message
/// (a reply to a command, most often), its response topic under the
/// forward entry's `prefix` like its topic; `None` without any.
fn request_props(m: &Message, prefix: &str) -> Option<RowProps> {
    let p = m.props.as_ref()?;
    let props = RowProps {
        response_topic: p.response_topic.as_ref().map(|t| format!("{prefix}{t}")),
        correlation_data: p.correlation_data.clone(),
        user: p.user.clone(),
    };
    (!props.is_empty()).then_some(props)
}
