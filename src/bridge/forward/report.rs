//! The forwarder's reactions: to the upstream connection's reports
//! (connect, drop, packet events), to commands from upstream, to live
//! messages, and the window refill from read-ahead rows.
//!
//! Owns the transitions between the modes of `window.rs`. Must not wait:
//! every request to the upstream client or the writer is tried at once.

use std::sync::atomic::Ordering::Relaxed;

use rumqttc::{Event, Incoming, Outgoing, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::window::{Mode, State, Tracked, off_the_wire, qos};
use super::{Forwarder, READ_BYTES, Read, WIRE_BYTES};
use crate::bridge::cursor::{Fetch, READ_AHEAD};
use crate::bridge::outbox::{self, WriteCmd, dead::Failure};
use crate::bridge::poison;
use crate::bridge::upstream::{Report, Resend, Upstream};
use crate::metrics::LogThrottle;
use crate::reading::Publish;

/// Commands from upstream that wait for room in the local publish queue.
pub(super) const COMMANDS_WAITING: usize = 64;

impl<C: Upstream> Forwarder<C> {
    pub(super) fn on_report(
        &mut self,
        link: &mut impl Resend,
        r: Report,
        st: &mut State,
        status_topic: &str,
    ) {
        match r {
            Report::Up { session_present } => self.on_up(st, session_present, status_topic),
            Report::Down => self.on_down(link, st),
            Report::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if pkid != 0 && !st.inflight.contains_key(&pkid) {
                    match st.queued.pop_front() {
                        Some(t) => {
                            st.inflight.insert(pkid, t);
                        }
                        None => warn!(
                            pkid,
                            "uplink: a publish went out that the bridge did not queue"
                        ),
                    }
                }
            }
            Report::Event(Event::Incoming(Incoming::PubAck(a))) => {
                let t = st.inflight.remove(&a.pkid);
                off_the_wire(st, t);
                self.acked(st, t);
            }
            Report::Event(Event::Incoming(Incoming::PubRec(r))) => {
                if let Some(t) = st.inflight.remove(&r.pkid) {
                    off_the_wire(st, Some(t));
                    st.released.insert(r.pkid, t);
                }
            }
            Report::Event(Event::Incoming(Incoming::PubComp(c))) => {
                let t = st.released.remove(&c.pkid);
                self.acked(st, t);
            }
            Report::Event(Event::Incoming(Incoming::Publish(p))) => self.command(st, p),
            Report::Event(_) => {}
        }
    }

    /// Disconnected → Live: a CONNACK. A new session (rumqttc lost its
    /// pending messages) sends every unacknowledged row again from the
    /// outbox; commands are subscribed, `online` said.
    pub(super) fn on_up(&mut self, st: &mut State, session_present: bool, status_topic: &str) {
        st.mode = Mode::Live;
        self.counters.connected.store(1, Relaxed);
        if !session_present {
            st.rewind(&self.progress.in_flight);
        }
        st.cursor.mark_live(*self.progress.committed.borrow() + 1);
        st.cursor.wake();
        for c in &self.cfg.commands {
            if !self.client.subscribe(c.filter.clone(), qos(c.qos.as_u8())) {
                warn!(filter = %c.filter, "cannot subscribe to commands");
            }
        }
        let online = bytes::Bytes::from_static(b"online");
        if self
            .client
            .publish(status_topic.to_string(), QoS::AtLeastOnce, true, online)
        {
            st.queued.push_back(Tracked::Untracked);
        }
    }

    /// Live → Disconnected, Flushing → Stopping: the connection dropped
    /// (a failed connect changes nothing). A drop of a live connection
    /// counts as a failed try of the oldest unacknowledged row.
    pub(super) fn on_down(&mut self, link: &mut impl Resend, st: &mut State) {
        if st.mode.connected() {
            // rows by id; a packet id whose Outgoing event has not come
            // yet was sent after every known one
            link.order(&|pkid| match st.inflight.get(&pkid) {
                Some(Tracked::Row(id, ..)) => *id,
                Some(Tracked::Untracked) => i64::MIN + 1,
                None => i64::MAX / 2 + i64::from(pkid),
            });
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
    /// the connection when it reads it, and rumqttc resends it first after
    /// the reconnect). After `max_attempts` tries it is given up on: out of
    /// rumqttc's resend queue, to the dead-letter table.
    fn blame(&mut self, link: &mut impl Resend, st: &mut State) {
        let suspect = st
            .inflight
            .iter()
            .filter_map(|(pkid, t)| match t {
                Tracked::Row(id, ..) => Some((*id, *pkid)),
                Tracked::Untracked => None,
            })
            .min();
        let Some((_, pkid)) = suspect else { return };
        let Some(Tracked::Row(id, _, attempts)) = st.inflight.get_mut(&pkid) else {
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

    /// Hands failed tries to the writer if it has room now (else later).
    pub(super) fn send_failures(&mut self, st: &mut State) {
        if st.failures.is_empty() {
            return;
        }
        let f = std::mem::take(&mut st.failures);
        match self.writer.try_send(WriteCmd::Failed(f)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(WriteCmd::Failed(f))) => st.failures = f,
            Err(_) => warn!("uplink: outbox writer gone; failed tries not recorded"),
        }
    }

    fn acked(&mut self, st: &mut State, t: Option<Tracked>) {
        if let Some(Tracked::Row(id, size, _)) = t {
            st.acks.push((id, size));
            self.counters.acked.fetch_add(1, Relaxed);
        }
    }

    /// A publish from upstream: a command for the local broker when a
    /// `commands` rule matches. It is acknowledged upstream only once it is
    /// in the local publish queue; while that queue is full it waits here
    /// (in order, at most [`COMMANDS_WAITING`]; the broker sends no more than
    /// its in-flight window unacknowledged meanwhile). Past that, or while
    /// the gateway stops, it is dropped, counted in `commands_dropped` and
    /// logged; one dropped while stopping is not acknowledged.
    fn command(&mut self, st: &mut State, p: rumqttc::Publish) {
        let Some(rule) = self
            .cfg
            .commands
            .iter()
            .find(|c| crate::bridge::filters::matches(&c.filter, &p.topic))
        else {
            // not a command topic: nothing to hand on
            self.ack_command(st, p);
            return;
        };
        let topic = p
            .topic
            .strip_prefix(rule.strip_prefix.as_str())
            .unwrap_or(&p.topic)
            .to_string();
        let Some(tx) = &self.commands else {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %p.topic, "uplink: command during the stop dropped (not acknowledged)");
            return;
        };
        info!(upstream = %p.topic, topic = %topic, "uplink: command from upstream");
        let publish = Publish {
            topic,
            payload: p.payload.clone(),
            qos: rule.qos,
            retain: false,
        };
        if st.commands.is_empty() {
            match tx.try_send(publish) {
                Ok(()) => self.ack_command(st, p),
                Err(mpsc::error::TrySendError::Full(publish)) => {
                    st.commands.push_back((publish, Some(p)));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.counters.commands_dropped.fetch_add(1, Relaxed);
                    warn!(upstream = %p.topic, "uplink: local broker gone; command dropped");
                    self.ack_command(st, p);
                }
            }
        } else if st.commands.len() < COMMANDS_WAITING {
            st.commands.push_back((publish, Some(p)));
        } else {
            self.counters.commands_dropped.fetch_add(1, Relaxed);
            warn!(upstream = %p.topic, waiting = st.commands.len(),
                "uplink: local publish queue full and too many commands waiting; command dropped");
            self.ack_command(st, p);
        }
    }

    /// Hands the oldest waiting command on through `permit` and
    /// acknowledges it upstream.
    pub(super) fn command_handed_on(&mut self, st: &mut State, permit: mpsc::Permit<'_, Publish>) {
        if let Some((publish, ack)) = st.commands.pop_front() {
            permit.send(publish);
            if let Some(p) = ack {
                self.ack_command(st, p);
            }
        }
    }

    /// Acknowledges `p` upstream (QoS 1/2), now or, when the client has
    /// no room, at the next turn.
    pub(super) fn ack_command(&mut self, st: &mut State, p: rumqttc::Publish) {
        if p.qos != QoS::AtMostOnce && !self.client.ack(&p) {
            st.command_acks.push(p);
        }
    }

    /// Retries the acknowledgements the client had no room for.
    pub(super) fn send_command_acks(&mut self, st: &mut State) {
        for p in std::mem::take(&mut st.command_acks) {
            self.ack_command(st, p);
        }
    }

    pub(super) fn send_live(&mut self, p: Publish, st: &mut State, log: &mut LogThrottle) {
        let q = p.qos.as_u8();
        let max = self.cfg.max_packet_size.bytes();
        if let Some(reason) = poison::too_large(&p.topic, p.payload.len(), max) {
            self.counters.live_dropped.fetch_add(1, Relaxed);
            warn!(topic = %p.topic, %reason, "uplink: live message dropped");
            return;
        }
        let ok = st.mode.connected() && self.client.publish(p.topic, qos(q), p.retain, p.payload);
        if ok {
            self.counters.sent.fetch_add(1, Relaxed);
            if q > 0 {
                // not from the outbox: its ack deletes nothing
                st.queued.push_back(Tracked::Untracked);
            }
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

    /// Hands read-ahead rows to rumqttc while the window has room.
    pub(super) fn fill(&mut self, st: &mut State) {
        let window = self.cfg.inflight as usize;
        while st.used() < window && (st.wire_bytes < WIRE_BYTES || st.unacked() == 0) {
            let Some(r) = st.cursor.ready.pop_front() else {
                return;
            };
            if !self.progress.in_flight.claim(r.id) {
                continue; // dropped or expired since it was read
            }
            let max = self.cfg.max_packet_size.bytes();
            if let Some(reason) = poison::too_large(&r.topic, r.payload.len(), max) {
                st.failures.push(Failure {
                    id: r.id,
                    attempts: r.attempts,
                    dead: Some(reason),
                });
                continue;
            }
            // the request channel holds the window and more: this fails
            // only if rumqttc is gone; the row is then read again later
            if !self
                .client
                .publish(r.topic, qos(r.qos), r.retain, r.payload)
            {
                st.rewind_rows(vec![r.id], &self.progress.in_flight);
                return;
            }
            st.queued
                .push_back(Tracked::Row(r.id, r.size as u64, r.attempts));
            st.wire_bytes += r.size as u64;
            self.counters.sent.fetch_add(1, Relaxed);
        }
    }

    /// Starts the next outbox read if the cursor wants one.
    pub(super) fn read(&mut self, st: &mut State) -> Option<(JoinHandle<Read>, Fetch, u64)> {
        let room = (self.cfg.inflight as usize).saturating_sub(st.used());
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
