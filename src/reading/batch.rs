//! The readings channel between the sources and the rules stage: bounded
//! in *readings*, not in messages, and each message is a batch (one
//! device's readings of one request, in order), so a poll of 100 points
//! costs one send, one wake-up of the rules stage and one lock, not 100.
//!
//! Policy: never drops. A sender waits until there is room for its whole
//! batch (a batch larger than the channel goes in pieces of at most the
//! capacity); waiters are served first come, first served, so one device's
//! batches stay in order and a slow rules stage slows the sources down
//! (back-pressure). Room is given back when the rules stage takes a batch.
//! Once the receiver is gone, every send fails at once.
//!
//! Owns only the channel. Must not know what a source or a rule is.

use std::sync::{Arc, Weak};

use tokio::sync::{Semaphore, mpsc};

use super::Reading;

/// The rules stage has stopped: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the readings channel is closed")]
pub struct Closed;

/// A bounded readings channel of `capacity` readings (at least 1).
pub fn channel(capacity: usize) -> (ReadingsSender, ReadingsReceiver) {
    // a semaphore holds at most MAX_PERMITS permits
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let room = Arc::new(Semaphore::new(capacity));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        ReadingsSender {
            tx,
            room: room.clone(),
            capacity,
        },
        ReadingsReceiver { rx, room },
    )
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct ReadingsSender {
    tx: mpsc::UnboundedSender<Vec<Reading>>,
    room: Arc<Semaphore>,
    capacity: usize,
}

impl ReadingsSender {
    /// Sends `readings` in order, waiting for room.
    pub async fn send(&self, mut readings: Vec<Reading>) -> Result<(), Closed> {
        while readings.len() > self.capacity {
            let rest = readings.split_off(self.capacity);
            self.send_one(readings).await?;
            readings = rest;
        }
        self.send_one(readings).await
    }

    async fn send_one(&self, readings: Vec<Reading>) -> Result<(), Closed> {
        if readings.is_empty() {
            return if self.tx.is_closed() {
                Err(Closed)
            } else {
                Ok(())
            };
        }
        // len <= capacity <= u32::MAX (see `channel`)
        let n = u32::try_from(readings.len()).map_err(|_| Closed)?;
        let permit = self.room.acquire_many(n).await.map_err(|_| Closed)?;
        // the receiver gives the room back when it takes the batch
        permit.forget();
        self.tx.send(readings).map_err(|_| Closed)
    }

    /// The readings queued now, without keeping the channel open.
    pub fn downgrade(&self) -> WeakReadingsSender {
        WeakReadingsSender {
            tx: self.tx.downgrade(),
            room: Arc::downgrade(&self.room),
            capacity: self.capacity,
        }
    }

    /// The channel's capacity in readings.
    pub fn max_capacity(&self) -> usize {
        self.capacity
    }

    /// Readings the channel has room for now.
    pub fn capacity(&self) -> usize {
        self.room.available_permits()
    }
}

/// A sender that does not keep the channel open (for queue lengths).
#[derive(Clone)]
pub struct WeakReadingsSender {
    tx: mpsc::WeakUnboundedSender<Vec<Reading>>,
    room: Weak<Semaphore>,
    capacity: usize,
}

impl WeakReadingsSender {
    /// Readings queued now; `None` once every sender is gone.
    pub fn queued(&self) -> Option<usize> {
        let _tx = self.tx.upgrade()?;
        let room = self.room.upgrade()?;
        Some(self.capacity.saturating_sub(room.available_permits()))
    }
}

/// The receiving side (the rules stage).
pub struct ReadingsReceiver {
    rx: mpsc::UnboundedReceiver<Vec<Reading>>,
    room: Arc<Semaphore>,
}

impl ReadingsReceiver {
    /// The next batch, in the order sent; `None` once every sender is gone
    /// and everything sent was taken.
    pub async fn recv(&mut self) -> Option<Vec<Reading>> {
        let batch = self.rx.recv().await?;
        self.room.add_permits(batch.len());
        Some(batch)
    }

    /// The next batch if one is queued now.
    pub fn try_recv(&mut self) -> Option<Vec<Reading>> {
        let batch = self.rx.try_recv().ok()?;
        self.room.add_permits(batch.len());
        Some(batch)
    }
}

impl Drop for ReadingsReceiver {
    fn drop(&mut self) {
        // senders waiting for room fail instead of waiting forever
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Quality, Value};
    use std::time::Duration;

    fn readings(from: i64, n: i64) -> Vec<Reading> {
        (from..from + n)
            .map(|i| Reading {
                device: "d".into(),
                point: "p".into(),
                value: Value::Int(i),
                unit: None,
                ts: i,
                quality: Quality::Good,
            })
            .collect()
    }

    fn values(b: &[Reading]) -> Vec<i64> {
        b.iter()
            .map(|r| match r.value {
                Value::Int(i) => i,
                _ => -1,
            })
            .collect()
    }

    #[tokio::test]
    async fn bounded_in_readings_and_a_full_channel_makes_the_sender_wait() {
        let (tx, mut rx) = channel(10);
        tx.send(readings(0, 6)).await.unwrap();
        assert_eq!(tx.downgrade().queued(), Some(6));
        // 6 + 6 > 10: the second batch waits until the first is taken
        let tx2 = tx.clone();
        let second = tokio::spawn(async move { tx2.send(readings(6, 6)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "a batch was queued past the capacity"
        );
        assert_eq!(
            values(&rx.recv().await.unwrap()),
            (0..6).collect::<Vec<_>>()
        );
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiting sender got room")
            .unwrap()
            .unwrap();
        assert_eq!(
            values(&rx.recv().await.unwrap()),
            (6..12).collect::<Vec<_>>()
        );
        assert_eq!(tx.downgrade().queued(), Some(0));
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_channel_goes_in_order_in_pieces() {
        let (tx, mut rx) = channel(4);
        let send = tokio::spawn(async move { tx.send(readings(0, 10)).await });
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            assert!(b.len() <= 4, "piece of {}", b.len());
            got.extend(values(&b));
        }
        send.await.unwrap().unwrap();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn sends_fail_once_the_receiver_is_gone_even_while_waiting() {
        let (tx, rx) = channel(2);
        tx.send(readings(0, 2)).await.unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(readings(2, 1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting sender was released")
            .unwrap();
        assert_eq!(r, Err(Closed));
        assert_eq!(tx.send(readings(3, 1)).await, Err(Closed));
        assert_eq!(tx.send(Vec::new()).await, Err(Closed));
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(8);
        let weak = tx.downgrade();
        tx.send(readings(0, 3)).await.unwrap();
        drop(tx);
        assert_eq!(weak.queued(), None);
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(3));
        assert!(rx.recv().await.is_none());
    }
}
