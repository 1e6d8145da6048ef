//! The forwarder's bookkeeping: its mode, what each packet id stands
//! for, and the in-flight window (see the module doc of `forward`).
//!
//! Owns no I/O. Must not talk to the outbox or the network.

use std::collections::{HashMap, VecDeque};

use rumqttc::QoS;

use super::pace::Pace;
use crate::bridge::cursor::Cursor;
use crate::bridge::outbox::{self, InFlight, dead::Failure};
use crate::bridge::upstream::{Limits, OTHER_PKIDS};
use crate::reading::Publish;

/// The forwarder's mode (see the transition diagram in `forward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// No upstream connection; the link reconnects after a backoff.
    Disconnected,
    /// Connected: the outbox drains, live messages go out.
    Live,
    /// Connected and stopping: the outbox drains until it is caught up,
    /// the connection drops, or `until`.
    Flushing { until: tokio::time::Instant },
    /// The loop ends; `stop` says `offline` first if `connected`.
    Stopping { connected: bool },
}

impl Mode {
    /// Connected upstream (rows may be sent).
    pub(super) fn connected(self) -> bool {
        matches!(self, Mode::Live | Mode::Flushing { .. })
    }
}

/// What one packet id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tracked {
    /// An outbox row.
    Row {
        id: i64,
        size: u64,
        /// Failed tries so far.
        attempts: u32,
    },
    /// Not from the outbox (status messages, live sends after a failed commit).
    Untracked,
    /// A message of the write-behind memory queue, by its sequence number.
    Behind(u64),
}

/// Whether the `released` marks of rows read from the outbox describe
/// the broker's session (see `upstream`'s module doc): only while every
/// connection of this process resumed the session of the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marks {
    /// Before the first CONNACK.
    Unknown,
    /// Every CONNACK so far had the session present: a marked row gets
    /// its PUBREL, not its PUBLISH.
    Trusted,
    /// A connection came up without the session: marks are stale, marked
    /// rows are sent again as new messages.
    Ignored,
}

pub(super) struct State {
    pub(super) mode: Mode,
    /// Sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2), by packet id.
    pub(super) inflight: HashMap<u16, Tracked>,
    /// QoS 2 rows past PUBREC whose `released` mark is on its way to the
    /// writer, in the order of their marks (`None`: forgotten at a session
    /// loss, kept so the writer's count still lines up).
    pub(super) releasing: VecDeque<Option<(u16, Tracked)>>,
    /// Marks not yet handed to the writer.
    pub(super) marks: Vec<i64>,
    /// Marks handed to the writer, and those it confirmed and whose
    /// PUBREL was asked for (`releasing` entries taken).
    pub(super) marks_sent: u64,
    pub(super) marks_done: u64,
    pub(super) marks_view: Marks,
    /// QoS 2 messages whose PUBREL was asked for, waiting for PUBCOMP.
    pub(super) released: HashMap<u16, Tracked>,
    /// The next packet id to try for a message not from the outbox.
    pub(super) next_other: u16,
    /// What to send next.
    pub(super) cursor: Cursor,
    /// Bytes of outbox rows handed to the link, not yet acknowledged (or,
    /// for QoS 2, not yet PUBREC'd: then the link drops the payload).
    pub(super) wire_bytes: u64,
    /// Acknowledged, not yet handed to the writer.
    pub(super) acks: Vec<outbox::Acked>,
    /// Acknowledged ids handed to the writer so far.
    pub(super) acks_sent: u64,
    /// Acknowledged ids the writer has handled (its `Progress::deleted`).
    pub(super) acks_done: u64,
    /// Failed tries and given-up rows, not yet handed to the writer.
    pub(super) failures: Vec<Failure>,
    /// Commands from upstream the local queue had no room for, in order,
    /// each with the publish to acknowledge once it is handed on (`None`
    /// when its connection dropped meanwhile: the broker sends it again).
    pub(super) commands: VecDeque<(Publish, Option<V5Publish>)>,
    /// Command acknowledgements the upstream client had no room for yet.
    pub(super) command_acks: Vec<V5Publish>,
    /// `uplink.drain_rate`, when set.
    pub(super) pace: Option<Pace>,
    /// What the broker allows on this connection (its CONNACK).
    pub(super) limits: Limits,
    /// The limits last said in the log (`server.rs`).
    pub(super) told: Option<Limits>,
    /// The first row committed after the last CONNACK: rows before it
    /// waited for the uplink and go with the replay marks (`props.rs`).
    pub(super) live_from: i64,
}

/// A publish from upstream.
pub(super) type V5Publish = rumqttc::v5::mqttbytes::v5::Publish;

impl State {
    pub(super) fn new(cursor: Cursor) -> State {
        State {
            mode: Mode::Disconnected,
            inflight: HashMap::new(),
            releasing: VecDeque::new(),
            marks: Vec::new(),
            marks_sent: 0,
            marks_done: 0,
            marks_view: Marks::Unknown,
            released: HashMap::new(),
            next_other: *OTHER_PKIDS.start(),
            cursor,
            wire_bytes: 0,
            acks: Vec::new(),
            acks_sent: 0,
            acks_done: 0,
            failures: Vec::new(),
            commands: VecDeque::new(),
            command_acks: Vec::new(),
            pace: None,
            limits: Limits::default(),
            told: None,
            live_from: 0,
        }
    }

    /// Sent (or queued to send) and not yet acknowledged.
    pub(super) fn unacked(&self) -> usize {
        self.inflight.len() + self.releasing.iter().flatten().count() + self.released.len()
    }

    /// Whether packet id `pkid` stands for a message not yet done.
    pub(super) fn holds(&self, pkid: u16) -> bool {
        self.inflight.contains_key(&pkid)
            || self.released.contains_key(&pkid)
            || self.releasing.iter().flatten().any(|(p, _)| *p == pkid)
    }

    /// A free packet id for a message not from the outbox.
    pub(super) fn other_pkid(&mut self) -> Option<u16> {
        for _ in OTHER_PKIDS {
            let pkid = self.next_other;
            self.next_other = if pkid == *OTHER_PKIDS.end() {
                *OTHER_PKIDS.start()
            } else {
                pkid + 1
            };
            if !self.holds(pkid) {
                return Some(pkid);
            }
        }
        None
    }

    /// Window slots taken: unacknowledged, plus acknowledged rows whose
    /// delete is not yet committed.
    pub(super) fn used(&self) -> usize {
        self.unacked() + self.acks.len() + (self.acks_sent - self.acks_done) as usize
    }

    /// The broker kept no session: everything not acknowledged goes back
    /// to the ranges, to be sent again in order.
    pub(super) fn rewind(&mut self, in_flight: &InFlight) {
        self.wire_bytes = 0;
        let releasing = self.releasing.iter_mut().filter_map(|e| e.take());
        let ids = releasing
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .into_iter()
            .chain(self.inflight.drain().map(|(_, t)| t))
            .chain(self.released.drain().map(|(_, t)| t))
            .filter_map(|t| match t {
                Tracked::Row { id, .. } => Some(id),
                Tracked::Untracked | Tracked::Behind(_) => None,
            })
            .collect::<Vec<_>>();
        self.rewind_rows(ids, in_flight);
    }

    /// Rows `ids` and the rows read ahead go back to the cursor's ranges;
    /// the uplink no longer holds any of them.
    pub(super) fn rewind_rows(&mut self, ids: Vec<i64>, in_flight: &InFlight) {
        in_flight.remove(ids.iter().copied());
        self.cursor.rewind(ids.into_iter());
    }
}

pub(super) fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A PUBACK or PUBREC: the session no longer holds the payload of `t`.
pub(super) fn off_the_wire(st: &mut State, t: Option<Tracked>) {
    if let Some(Tracked::Row { size, .. }) = t {
        st.wire_bytes = st.wire_bytes.saturating_sub(size);
    }
}
