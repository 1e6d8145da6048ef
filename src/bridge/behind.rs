//! Write-behind (`uplink.buffer.write_behind`): the gateway's own
//! forwarded messages are kept in memory and sent upstream from there;
//! only those the uplink has not acknowledged within the window are
//! written to the outbox (and sent from it like any row). While the uplink
//! keeps up, nothing is written per message.
//!
//! The trade: a power cut or SIGKILL loses at most the window of the
//! gateway's own messages (those not yet acknowledged upstream). Local
//! clients' QoS 1/2 messages never pass here: they are committed before
//! their PUBACK, as always. SIGTERM writes what is pending before the
//! writer stops ([`Behind::run`]).
//!
//! - the memory bound ([`MAX_MESSAGES`], [`MAX_BYTES`]): past it the oldest
//!   messages are written at once, so memory stays bounded through an
//!   outage of any length;
//! - a message is sent at QoS 1 at most from memory (a QoS 2 forward entry
//!   gets QoS 2 once it is in the outbox); it may arrive twice when its
//!   PUBACK comes after the window (it is then sent again from the
//!   outbox): duplicates, never a loss;
//! - across an outage, messages written from memory join the outbox
//!   behind older rows, and newer messages go out from memory first (as
//!   with `drain: live_first`).
//!
//! Owns the memory queue and its spill task. Must not talk to the network:
//! the forwarder takes messages ([`Behind::take`]) and reports acknowledgements
//! ([`Behind::acked`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::counters::Counters;
use super::outbox::{NewMessage, WriteCmd};

/// Messages kept in memory at most; past it the oldest are written.
pub const MAX_MESSAGES: usize = 100_000;
/// Bytes (topic + payload) kept in memory at most.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// One message in memory.
struct Item {
    msg: NewMessage,
    at: Instant,
}

#[derive(Default)]
struct Queue {
    next_seq: u64,
    /// Not acknowledged, by sequence number (the oldest first).
    items: BTreeMap<u64, Item>,
    /// Not yet handed to the forwarder.
    unsent: VecDeque<u64>,
    bytes: u64,
}

impl Queue {
    /// Takes out the oldest messages while `pred` holds for the oldest
    /// (given the messages and bytes held).
    fn take_oldest(&mut self, pred: impl Fn(&Item, usize, u64) -> bool) -> Vec<NewMessage> {
        let mut out = Vec::new();
        while let Some((_, item)) = self.items.first_key_value() {
            if !pred(item, self.items.len(), self.bytes) {
                break;
            }
            if let Some((_, item)) = self.items.pop_first() {
                self.bytes -= item.msg.size();
                out.push(item.msg);
            }
        }
        // the oldest go first, so what they leave in `unsent` is its head
        // (an outage of any length must not grow it)
        while let Some(seq) = self.unsent.front() {
            if self.items.contains_key(seq) {
                break;
            }
            self.unsent.pop_front();
        }
        out
    }
}

/// The memory queue, shared by the own intake, the forwarder and the
/// spill task.
pub struct Behind {
    window: Duration,
    queue: Mutex<Queue>,
    /// Told when messages wait to be sent.
    pub ready: Notify,
    counters: Arc<Counters>,
}

impl Behind {
    pub fn new(window: Duration, counters: Arc<Counters>) -> Arc<Behind> {
        Arc::new(Behind {
            window,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            counters,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `msgs`; returns the oldest messages past the memory bound,
    /// for the caller to write now.
    pub fn push(&self, msgs: Vec<NewMessage>) -> Vec<NewMessage> {
        let now = Instant::now();
        let over = {
            let mut q = self.lock();
            for msg in msgs {
                let seq = q.next_seq;
                q.next_seq += 1;
                q.bytes += msg.size();
                q.items.insert(seq, Item { msg, at: now });
                q.unsent.push_back(seq);
            }
            q.take_oldest(|_, n, bytes| n > MAX_MESSAGES || bytes > MAX_BYTES)
        };
        self.ready.notify_one();
        over
    }

    /// Up to `n` messages not yet sent, with their sequence numbers.
    pub fn take(&self, n: usize) -> Vec<(u64, NewMessage)> {
        let mut q = self.lock();
        let mut out = Vec::new();
        while out.len() < n {
            let Some(seq) = q.unsent.pop_front() else {
                break;
            };
            if let Some(item) = q.items.get(&seq) {
                out.push((seq, item.msg.clone()));
            }
        }
        out
    }

    /// Messages taken but not sent (the link had no room): first again.
    pub fn untake(&self, seqs: impl DoubleEndedIterator<Item = u64>) {
        let mut q = self.lock();
        for seq in seqs.rev() {
            q.unsent.push_front(seq);
        }
    }

    /// The broker acknowledged message `seq`: it is done.
    pub fn acked(&self, seq: u64) {
        let mut q = self.lock();
        if let Some(item) = q.items.remove(&seq) {
            q.bytes -= item.msg.size();
            self.counters.acked.fetch_add(1, Relaxed);
        }
    }

    /// Messages in memory.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().items.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages whose window ends by `until`.
    fn due(&self, until: Instant) -> Vec<NewMessage> {
        let window = self.window;
        self.lock()
            .take_oldest(|item, _, _| item.at + window <= until)
    }

    /// Every message left.
    fn all(&self) -> Vec<NewMessage> {
        self.lock().take_oldest(|_, _, _| true)
    }

    /// The spill task: every quarter window, writes the messages whose
    /// window ends before the next tick (committed at once, so none is
    /// older than the window when it reaches the card); at `stop`, writes
    /// every message left and waits for that commit.
    pub async fn run(self: Arc<Self>, writer: mpsc::Sender<WriteCmd>, stop: CancellationToken) {
        let tick = (self.window / 4).max(Duration::from_millis(10));
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let due = self.due(Instant::now() + tick);
                    if !due.is_empty() {
                        debug!(messages = due.len(), "write-behind: not acknowledged within the window; written");
                        write(&writer, due, false).await;
                    }
                }
                _ = stop.cancelled() => {
                    let left = self.all();
                    if !left.is_empty() {
                        debug!(messages = left.len(), "write-behind: written at the stop");
                        write(&writer, left, true).await;
                    }
                    return;
                }
            }
        }
    }
}

/// Writes `msgs` to the outbox (committed at once); waits for the commit
/// when `wait`.
pub async fn write(writer: &mpsc::Sender<WriteCmd>, msgs: Vec<NewMessage>, wait: bool) {
    let (cmd, committed) = WriteCmd::insert_now(msgs);
    if writer.send(cmd).await.is_err() {
        warn!("write-behind: the outbox writer is gone; messages in memory are lost");
        return;
    }
    if wait {
        let _ = committed.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bridge::outbox::tests::m;

    #[test]
    fn acknowledged_messages_are_never_due_the_others_by_the_window() {
        let b = Behind::new(Duration::from_secs(1), Arc::new(Counters::default()));
        assert!(b.push((0..3).map(m).collect()).is_empty());
        let sent = b.take(10);
        assert_eq!(sent.len(), 3);
        b.acked(sent[0].0);
        let t0 = Instant::now();
        assert!(b.due(t0).is_empty(), "due before the window");
        let due = b.due(t0 + Duration::from_secs(1));
        assert_eq!(
            due.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(),
            vec![m(1).payload, m(2).payload]
        );
        assert!(b.is_empty());
        // an acknowledgement after the message was written changes nothing
        b.acked(sent[1].0);
        assert_eq!(b.counters.acked.load(Relaxed), 1);
    }

    #[test]
    fn messages_written_unsent_leave_nothing_behind_in_memory() {
        let b = Behind::new(Duration::from_secs(1), Arc::new(Counters::default()));
        // the uplink is down: nothing is taken, everything is written
        for i in 0..100 {
            b.push(vec![m(i)]);
        }
        assert_eq!(b.due(Instant::now() + Duration::from_secs(2)).len(), 100);
        assert!(b.lock().unsent.is_empty(), "stale sequence numbers kept");
        assert!(b.take(10).is_empty());
    }

    #[test]
    fn past_the_memory_bound_the_oldest_are_handed_back() {
        let b = Behind::new(Duration::from_secs(1), Arc::new(Counters::default()));
        let over = b.push((0..MAX_MESSAGES + 2).map(m).collect());
        assert_eq!(over.len(), 2);
        assert_eq!(over[0].payload, m(0).payload);
        assert_eq!(b.len(), MAX_MESSAGES);
        // what was handed back is not sent from memory
        assert_eq!(b.take(1)[0].1.payload, m(2).payload);
    }
}
