//! The forwarder's reactions: to the upstream connection's reports
//! (connect, drop, packet events), to commands from upstream, to live
//! messages, and the window refill from read-ahead rows.
//!
//! Owns the transitions between the modes of `window.rs`. Must not wait:
//! every request to the upstream client or the writer is tried at once.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::QoS;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::props::{Expiry, remaining, row_properties};
use super::window::{Marks, Mode, State, Tracked, off_the_wire, qos};
use super::{Forwarder, READ_BYTES, Read, WIRE_BYTES};
use crate::bridge::config::Protocol;
use crate::bridge::cursor::{Fetch, READ_AHEAD};
use crate::bridge::outbox::{self, dead::Failure};
use crate::bridge::poison;
use crate::bridge::upstream::{Outgoing, Report, Resend, Upstream, row_pkid};
use crate::log_throttle::LogThrottle;
use crate::reading::Publish;

/// The resend order of messages not from the outbox: before every row.
pub(super) const OTHER_KEY: i64 = i64::MIN + 1;

impl<C: Upstream> Forwarder<C> {
    pub(super) fn on_report(
        &mut self,
        link: &mut impl Resend,
        r: Report,
        st: &mut State,
        status_topic: &str,
    ) {
        match r {
            Report::Up {
                session_present,
                limits,
            } => {
                self.on_limits(st, limits);
                self.on_up(st, session_present, status_topic);
            }
            Report::Refused { pkid, refusal } => self.refused(st, pkid, refusal),
            Report::Down => self.on_down(link, st),
            Report::Acked(pkid) => {
                let t = st.inflight.remove(&pkid);
                off_the_wire(st, t);
                self.acked(st, t);
            }
            Report::Received(pkid) => match st.inflight.remove(&pkid) {
                Some(t @ Tracked::Row { id, .. }) => {
                    // PUBREL once the row is marked released in the outbox
                    off_the_wire(st, Some(t));
                    st.marks.push(id);
                    st.releasing.push_back(Some((pkid, t)));
                }
                // not sent at QoS 2; nothing to mark either way
                Some(t @ (Tracked::Untracked | Tracked::Behind(_)))
                    if self.client.release(pkid, OTHER_KEY) =>
                {
                    st.released.insert(pkid, t);
                }
                Some(Tracked::Untracked | Tracked::Behind(_)) | None => {}
            },
            Report::Completed(pkid) => {
                let t = st.released.remove(&pkid);
                self.acked(st, t);
            }
            Report::Command(p) => self.command(st, *p),
        }
    }

    /// Asks for the PUBREL of every row whose `released` mark the writer
    /// has committed (`done` marks in all).
    pub(super) fn release_marked(&mut self, st: &mut State, done: u64) {
        while st.marks_done < done {
            let Some(front) = st.releasing.front() else {
                return;
            };
            if let Some((pkid, t)) = *front {
                let key = match t {
                    Tracked::Row { id, .. } => id,
                    Tracked::Untracked | Tracked::Behind(_) => OTHER_KEY,
                };
                if !self.client.release(pkid, key) {
                    return; // no room: the next turn
                }
                st.released.insert(pkid, t);
            }
            st.releasing.pop_front();
            st.marks_done += 1;
        }
    }

    /// Sends a message not from the outbox (`online`, `offline`, live):
    /// QoS 2 goes at QoS 1 (see `upstream`'s module doc); `false` when the
    /// link has no room or no packet id is free.
    pub(super) fn send_other(
        &mut self,
        st: &mut State,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: bytes::Bytes,
    ) -> bool {
        let qos = match qos {
            QoS::ExactlyOnce => QoS::AtLeastOnce,
            q => q,
        };
        let (qos, retain) = self.allowed(st, qos, retain);
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => match st.other_pkid() {
                Some(p) => p,
                None => return false,
            },
        };
        let o = Outgoing {
            topic,
            qos,
            retain,
            payload,
            pkid,
            key: OTHER_KEY,
            properties: None,
        };
        if !self.client.publish(o) {
            return false;
        }
        if pkid != 0 {
            st.inflight.insert(pkid, Tracked::Untracked);
        }
        true
    }

    /// Disconnected → Live: a CONNACK. A new session (the broker kept
    /// nothing) sends every unacknowledged row again from the outbox; commands are subscribed, `online` said.
    pub(super) fn on_up(&mut self, st: &mut State, session_present: bool, status_topic: &str) {
        st.mode = Mode::Live;
        self.counters.connected.store(1, Relaxed);
        st.marks_view = match (st.marks_view, session_present) {
            (Marks::Unknown | Marks::Trusted, true) => Marks::Trusted,
            _ => Marks::Ignored,
        };
        if !session_present {
            st.rewind(&self.progress.in_flight);
        }
        st.live_from = *self.progress.committed.borrow() + 1;
        st.cursor.mark_live(st.live_from);
        st.cursor.wake();
        for (i, c) in self.cfg.commands.iter().enumerate() {
            if !self.command_allowed(st, i, c) {
                continue;
            }
            if !self.client.subscribe(c.filter.clone(), qos(c.qos.as_u8())) {
                warn!(filter = %c.filter, "cannot subscribe to commands");
            }
        }
        let online = bytes::Bytes::from_static(b"online");
        if !self.send_other(st, status_topic.to_string(), QoS::AtLeastOnce, true, online) {
            warn!("uplink: cannot say online");
        }
    }

    /// Live → Disconnected, Flushing → Stopping: the connection dropped
    /// (a failed connect changes nothing). A drop of a live connection
    /// counts as a failed try of the oldest unacknowledged row.
    pub(super) fn on_down(&mut self, link: &mut impl Resend, st: &mut State) {
        if st.mode.connected() {
            self.blame(link, st);
        }
        st.mode = match st.mode {
            Mode::Flushing { .. } => Mode::Stopping { connected: false },
            Mode::Stopping { .. } => Mode::Stopping { connected: false },
            Mode::Live | Mode::Disconnected => Mode::Disconnected,
        };
        // acknowledgements belong to the connection that dropped: the
        // broker sends those commands again on the next one
        st.command_acks.clear();
        for (_, ack) in st.commands.iter_mut() {
            *ack = None;
        }
        self.counters.connected.store(0, Relaxed);
    }

    /// Live → Flushing (until `until`), Disconnected → Stopping: the
    /// gateway stops. Commands are no longer taken.
    pub(super) fn on_shutdown(&mut self, st: &mut State, until: tokio::time::Instant) {
        self.commands = None;
        self.command_props = None;
        if !st.commands.is_empty() {
            self.counters
                .commands_dropped
                .fetch_add(st.commands.len() as u64, Relaxed);
            warn!(
                commands = st.commands.len(),
                "uplink: stopping with commands the local queue had no room for: \
                 dropped (not acknowledged upstream)"
            );
            st.commands.clear();
        }
        info!(
            connected = st.mode.connected(),
            "uplink: flushing the outbox before stopping"
        );
        st.mode = match st.mode {
            Mode::Live => Mode::Flushing { until },
            Mode::Disconnected => Mode::Stopping { connected: false },
            m => m,
        };
    }

    /// Flushing → Stopping once everything committed is acknowledged (or
    /// at the deadline, `expired`).
    pub(super) fn after_turn(&mut self, st: &mut State, expired: bool) {
        if let Mode::Flushing { .. } = st.mode {
            // a commit the loop has not looked at yet (its wake-up lost the
            // race against the shutdown) is not caught up
            if self.progress.committed.has_changed().unwrap_or(false) {
                st.cursor.wake();
            }
            let done = st.cursor.caught_up && st.cursor.ready.is_empty() && st.unacked() == 0;
            if expired {
                warn!(
                    in_flight = st.unacked(),
                    "uplink: flush deadline reached; the rest stays in the outbox"
                );
            }
            if done || expired {
                st.mode = Mode::Stopping { connected: true };
            }
        }
    }

    /// A connection that was up dropped: the oldest message sent and not
    /// acknowledged takes the blame (a broker that refuses a message closes
    /// the connection when it reads it, and the link resends it first after
    /// the reconnect). After `max_attempts` tries it is given up on: out of
    /// the session, to the dead-letter table.
    fn blame(&mut self, link: &mut impl Resend, st: &mut State) {
        let suspect = st
            .inflight
            .iter()
            .filter_map(|(pkid, t)| match t {
                Tracked::Row { id, .. } => Some((*id, *pkid)),
                Tracked::Untracked | Tracked::Behind(_) => None,
            })
            .min();
        let Some((_, pkid)) = suspect else { return };
        let Some(Tracked::Row { id, attempts, .. }) = st.inflight.get_mut(&pkid) else {
            return;
        };
        *attempts = attempts.saturating_add(1);
        let (id, attempts) = (*id, *attempts);
        let dead = (attempts >= self.cfg.max_attempts).then(|| {
            let t = st.inflight.remove(&pkid);
            off_the_wire(st, t);
            link.forget_publish(pkid);
            format!("the upstream connection dropped {attempts} times while it was the oldest message unacknowledged")
        });
        st.failures.push(Failure { id, attempts, dead });
    }

    fn acked(&mut self, st: &mut State, t: Option<Tracked>) {
        match t {
            Some(Tracked::Row { id, size, .. }) => {
                st.acks.push((id, size));
                self.counters.acked.fetch_add(1, Relaxed);
            }
            Some(Tracked::Behind(seq)) => {
                if let Some(b) = &self.behind {
                    b.acked(seq);
                }
            }
            Some(Tracked::Untracked) | None => {}
        }
    }

    pub(super) fn send_live(&mut self, p: Publish, st: &mut State, log: &mut LogThrottle) {
        let q = p.qos.as_u8();
        let max = self.send_max(st);
        if let Some(reason) = poison::too_large(&p.topic, p.payload.len(), max) {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            warn!(topic = %p.topic, %reason, "uplink: live message dropped");
            return;
        }
        // not from the outbox: its ack deletes nothing
        let ok = st.mode.connected() && self.send_other(st, p.topic, qos(q), p.retain, p.payload);
        if ok {
            self.counters.sent.fetch_add(1, Relaxed);
        } else {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            if let Some(suppressed) = log.ready() {
                warn!(
                    suppressed_logs = suppressed,
                    "uplink down: live message (QoS 0 or not buffered) dropped"
                );
            }
        }
    }

    /// Hands read-ahead rows to the link while the window has room, each
    /// with its packet id ([`row_pkid`]); a row marked released whose
    /// session the broker kept gets its PUBREL instead. A row past its
    /// message expiry is dropped unsent (counted as expired); one larger
    /// than the broker takes goes to the dead-letter table.
    pub(super) fn fill(&mut self, st: &mut State) {
        let now = tokio::time::Instant::now();
        let wall_ms = crate::reading::now_ms();
        if let Some(p) = &mut st.pace {
            p.unblock();
        }
        while self.room(st) > 0 && (st.wire_bytes < WIRE_BYTES || st.unacked() == 0) {
            let Some(r) = st.cursor.ready.pop_front() else {
                return;
            };
            let pkid = row_pkid(r.id);
            let paced = !st.cursor.is_live(r.id) && st.pace.as_mut().is_some_and(|p| !p.take(now));
            if paced || st.holds(pkid) {
                // drain_rate: wait for a token; or a row ROW_PKIDS older
                // still has this id: wait for it
                st.cursor.ready.push_front(r);
                return;
            }
            if !self.progress.in_flight.claim(r.id) {
                continue; // dropped or expired since it was read
            }
            let expiry = remaining(r.expiry_s, r.created_ms, wall_ms);
            if expiry == Expiry::Past {
                // deleted like an acknowledged row, never sent stale
                st.acks.push((r.id, r.size as u64));
                self.counters.message_expired.fetch_add(1, Relaxed);
                continue;
            }
            let properties = (self.cfg.protocol == Protocol::V5)
                .then(|| {
                    let replay = self.cfg.backfill_properties && r.id < st.live_from;
                    row_properties(expiry, r.props.clone(), replay.then_some(r.created_ms))
                })
                .flatten();
            let size = poison::packet_size(&r.topic, r.payload.len())
                + poison::properties_size(self.cfg.protocol, properties.as_ref());
            let (ours, server) = (self.cfg.max_packet_size.bytes(), st.limits.max_packet);
            if let Some(reason) = poison::too_large_for(size, ours, server.map(u64::from)) {
                st.failures.push(Failure {
                    id: r.id,
                    attempts: r.attempts,
                    dead: Some(reason),
                });
                continue;
            }
            let t = Tracked::Row {
                id: r.id,
                size: r.size as u64,
                attempts: r.attempts,
            };
            let release = r.released && st.marks_view == Marks::Trusted;
            let (q, retain) = self.allowed(st, qos(r.qos), r.retain);
            // the request queue holds the window and more: this fails
            // only if the link is gone; the row is then read again later
            let queued = if release {
                self.client.release(pkid, r.id)
            } else {
                self.client.publish(Outgoing {
                    topic: r.topic,
                    qos: q,
                    retain,
                    payload: r.payload,
                    pkid,
                    key: r.id,
                    properties,
                })
            };
            if !queued {
                st.rewind_rows(vec![r.id], &self.progress.in_flight);
                return;
            }
            if release {
                st.released.insert(pkid, t);
            } else if q == QoS::AtMostOnce {
                // the broker's Maximum QoS is 0: nothing will acknowledge it
                st.acks.push((r.id, r.size as u64));
            } else {
                st.inflight.insert(pkid, t);
                st.wire_bytes += r.size as u64;
            }
            self.counters.sent.fetch_add(1, Relaxed);
        }
    }

    /// Starts the next outbox read if the cursor wants one.
    pub(super) fn read(&mut self, st: &mut State) -> Option<(JoinHandle<Read>, Fetch, u64)> {
        let room = self.room(st);
        let depth = self.counters.depth.load(Relaxed).max(1);
        let avg = (self.counters.depth_bytes.load(Relaxed) / depth).max(1);
        let rows = (READ_BYTES / avg).clamp(1, READ_AHEAD as u64) as usize;
        if !st.cursor.wants_read(room, rows) {
            return None;
        }
        let fetch = st.cursor.next_fetch(room, rows)?;
        if fetch.open_ended() {
            // what is committed now is seen: a later commit wakes us again
            self.progress.committed.borrow_and_update();
        }
        let started = self.progress.in_flight.generation();
        let pool = self.pool.clone();
        let task =
            tokio::spawn(
                async move { outbox::fetch(&pool, fetch.lo, fetch.hi, fetch.limit).await },
            );
        Some((task, fetch, started))
    }
}
