//! The write half of a client connection: takes what its session owes the
//! client (control packets, messages in flight again after a reconnect,
//! queued messages while the in-flight window has room), encodes a batch
//! into one buffer, writes it, and flushes only when nothing more is
//! waiting. Refills the memory queue from the store's spool. Its buffers
//! are allocated on first use and given back after [`IDLE_AFTER`] with
//! nothing to write, so an idle connection costs little.
//!
//! Owns the socket's write half. Must not read from the client or touch
//! other sessions.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::aliases::{Aliases, TopicRef};
use super::message::now_ms;
use super::packet::{self, encode5, props::Properties};
use super::router::Router;
use super::session::{Cell, Control, Outgoing};
use super::stats::add;

/// Most packets encoded into one write.
const BATCH: usize = 256;
/// Buffer bytes an idle writer keeps.
const IDLE_KEEP: usize = 2048;
/// How long without anything to write makes a writer idle.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Spool rows and bytes loaded at a time.
const LOAD_ROWS: usize = 256;
const LOAD_BYTES: usize = 1 << 20;

/// Encodes `o` for a client at 3.1.1 or (`v5`: with its `aliases`) 5.0;
/// `true` for a PUBLISH.
fn encode(buf: &mut BytesMut, o: &Outgoing, v5: Option<&mut Aliases>, now_ms: u64) -> bool {
    let none = Properties::default;
    match o {
        Outgoing::Control(Control::Ack(first, pkid)) => packet::write_ack(buf, *first, *pkid),
        Outgoing::Control(Control::AckCode(first, pkid, code)) => match v5 {
            Some(_) => encode5::write_ack(buf, *first, *pkid, *code, &none()),
            None => packet::write_ack(buf, *first, *pkid),
        },
        Outgoing::Control(Control::SubAck(pkid, codes)) => match v5 {
            Some(_) => encode5::write_suback(buf, *pkid, codes, &none()),
            None => {
                let codes: Vec<u8> = codes
                    .iter()
                    .map(|c| if *c >= 0x80 { 0x80 } else { *c })
                    .collect();
                packet::write_suback(buf, *pkid, &codes)
            }
        },
        Outgoing::Control(Control::UnsubAck(pkid, codes)) => match v5 {
            Some(_) => encode5::write_unsuback(buf, *pkid, codes, &none()),
            None => packet::write_ack(buf, 0xB0, *pkid),
        },
        Outgoing::Control(Control::PingResp) => packet::write_pingresp(buf),
        Outgoing::Publish { d, pkid, dup } => {
            let (topic, payload) = (d.msg.topic.as_bytes(), &d.msg.payload);
            match v5 {
                Some(aliases) => {
                    let mut p = d.properties(now_ms);
                    let topic = match aliases.refer(&d.msg.topic) {
                        TopicRef::Name => topic,
                        TopicRef::NameAndAlias(a) => {
                            p.topic_alias = Some(a);
                            topic
                        }
                        TopicRef::Alias(a) => {
                            p.topic_alias = Some(a);
                            &[][..]
                        }
                    };
                    encode5::write_publish(buf, topic, payload, d.qos, d.retain, *dup, *pkid, &p)
                }
                None => packet::write_publish(buf, topic, payload, d.qos, d.retain, *dup, *pkid),
            }
            return true;
        }
    }
    false
}

/// Writes until the socket fails or the session belongs to another
/// connection (`generation`).
pub async fn run<W: AsyncWrite + Unpin>(
    wr: &mut W,
    cell: Arc<Cell>,
    router: Arc<Router>,
    generation: u64,
) -> std::io::Result<()> {
    let limits = router.limits;
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    // this connection's own aliases (a client's maximum of 0: none), at
    // most `max_topic_alias` of them: each keeps its topic alive, so a
    // client offering 65,535 must not make the broker hold 65,535 topics
    let offered = cell.lock().peer.topic_alias_max;
    let mut aliases = Aliases::new(offered.min(limits.max_topic_alias));
    loop {
        let wake = cell.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (load, v5) = {
            let mut s = cell.lock();
            if s.attached.as_ref().map(|a| a.generation) != Some(generation) {
                return Ok(());
            }
            s.take(&limits, &mut out, BATCH);
            router.flush_ops(&mut s);
            (s.wants_load(&limits), s.peer.v5)
        };
        // room freed, or all written: wake publishers and flushes waiting
        cell.space.notify_waiters();
        if let (Some(after), Some(store)) = (load, &router.store) {
            // boxed: only a session with a spool needs room for the read
            let rows = Box::pin(store.load_messages(&cell.client_id, after, LOAD_ROWS, LOAD_BYTES))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(client_id = %cell.client_id, error = %e, "cannot read spooled messages");
                    Vec::new()
                });
            cell.lock().loaded(rows);
            if out.is_empty() {
                continue;
            }
        }
        if out.is_empty() {
            wr.flush().await?;
            // buffers stay while the client is busy; after IDLE_AFTER
            // without anything to write they are given back
            if tokio::time::timeout(IDLE_AFTER, wake.as_mut())
                .await
                .is_err()
            {
                if buf.capacity() > IDLE_KEEP {
                    buf = BytesMut::new();
                }
                if out.capacity() * std::mem::size_of::<Outgoing>() > IDLE_KEEP {
                    out = Vec::new();
                }
                wake.await;
            }
            continue;
        }
        let mut publishes = 0;
        let packets = out.len() as u64;
        let now = now_ms();
        for o in out.drain(..) {
            let v5 = v5.then_some(&mut aliases);
            publishes += encode(&mut buf, &o, v5, now) as u64;
        }
        let stats = &router.stats;
        add(&stats.publish_sent, publishes);
        add(&stats.messages_sent, packets);
        add(&stats.bytes_sent, buf.len() as u64);
        wr.write_all(&buf).await?;
        buf.clear();
    }
}
