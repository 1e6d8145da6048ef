//! The gateway's own publisher: an in-process rumqttd link that publishes
//! what the rules stage produces and flushes the final status on shutdown.
//! Must not know about devices or rules: it moves [`Publish`]es.

use std::time::Duration;

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::ops::metrics;
use crate::reading::Publish;

/// `true` when rumqttd accepts `topic` for publishing (a bad topic would
/// make the router drop the whole in-process link).
pub fn valid_publish_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

/// How long [`publisher`] waits, after its last publish, for the broker to
/// route it and for listener threads to write it to subscribers' sockets.
const FLUSH_WAIT: Duration = Duration::from_secs(1);
const FLUSH_GRACE: Duration = Duration::from_millis(300);

/// Publishes everything from `rx` into the broker through an in-process link,
/// until `rx` closes (all senders dropped), and keeps the link's notification
/// queue drained.
///
/// `echo_topic` (the gateway status topic) is subscribed on the same link:
/// after the last publish, the publisher waits until the broker routed the
/// last message on it back (at most [`FLUSH_WAIT`]), plus [`FLUSH_GRACE`] for
/// the listener threads, so the final `offline` reaches local subscribers
/// before the process exits (rumqttd has no graceful shutdown).
///
/// rumqttd's local links publish at QoS 0 only; the router then delivers at
/// each subscription's QoS. The QoS of a [`Publish`] matters for the bridge,
/// not here.
///
/// Drop policy: a publish whose topic the broker would refuse is logged and
/// dropped (it never reaches subscribers or the bridge).
pub async fn publisher(
    link: (LinkTx, LinkRx),
    mut rx: mpsc::Receiver<Publish>,
    echo_topic: String,
) {
    let (mut tx, mut lrx) = link;
    if let Err(e) = tx.subscribe(echo_topic.clone()) {
        warn!(error = %e, "cannot subscribe the publisher link to its own status topic");
    }
    let mut last_echo: Option<Bytes> = None;
    let mut echoed = false;
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { break };
                if !valid_publish_topic(&p.topic) {
                    warn!(topic = %p.topic, "dropping publish with an invalid topic");
                    metrics::get()
                        .publish_dropped
                        .get_or_create(&metrics::labels("reason", "invalid_topic"))
                        .inc();
                    continue;
                }
                metrics::get().published.inc();
                if p.topic == echo_topic {
                    last_echo = Some(p.payload.clone());
                    echoed = false;
                }
                let publish = rumqttd::protocol::Publish::new(Bytes::from(p.topic), p.payload, p.retain);
                if let Err(e) = tx.send(Packet::Publish(publish, None)).await {
                    error!(error = %e, "local broker link closed; publishes stop");
                    return;
                }
            }
            n = lrx.next() => {
                // the echo may come back before this loop sees `rx` closed
                if let (Ok(Some(rumqttd::Notification::Forward(f))), Some(want)) = (&n, &last_echo)
                    && f.publish.payload == want
                {
                    echoed = true;
                }
                if !drain_notification(&mut lrx, n).await {
                    return;
                }
            }
        }
    }
    let Some(want) = last_echo else { return };
    let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
    while !echoed {
        let Ok(n) = tokio::time::timeout_at(deadline, lrx.next()).await else {
            warn!("the broker did not route the last status message in time");
            return;
        };
        if let Ok(Some(rumqttd::Notification::Forward(f))) = &n
            && f.publish.payload == want
        {
            echoed = true;
        }
        if !drain_notification(&mut lrx, n).await {
            return;
        }
    }
    tokio::time::sleep(FLUSH_GRACE).await;
}

/// Handles one notification of an in-process link; `false` when the link is gone.
async fn drain_notification(
    lrx: &mut LinkRx,
    n: Result<Option<rumqttd::Notification>, rumqttd::local::LinkError>,
) -> bool {
    match n {
        Ok(Some(n)) => {
            // `None` means the router paused this link: say we are ready again.
            if Option::<Packet>::from(n).is_none() && lrx.wake().await.is_err() {
                return false;
            }
            true
        }
        Ok(None) => true,
        Err(e) => {
            error!(error = %e, "local broker link closed; publishes stop");
            false
        }
    }
}
