//! The node's copy of the readings: a task between the sources and the
//! rules stage that hands each batch to the node, then to the rules stage,
//! unchanged and in order.
//!
//! Policy: never drops. A full node queue ([`super::READINGS_QUEUE`]
//! batches) or a full rules channel makes the tap wait, and the sources
//! with it (back-pressure, as without the node). When the node has ended,
//! the rules stage still gets every batch. Owns only the tap; must not
//! look into readings.

use tokio::sync::mpsc;

use crate::reading::Reading;
use crate::reading::batch::{self, ReadingsReceiver};

/// Starts the tap on `from`: the rules stage's receiver (of `capacity`
/// readings, as the sources' channel) and the node's.
pub fn start(
    mut from: ReadingsReceiver,
    capacity: usize,
) -> (ReadingsReceiver, mpsc::Receiver<Vec<Reading>>) {
    let (rules_tx, rules_rx) = batch::channel(capacity);
    let (node_tx, node_rx) = mpsc::channel(super::READINGS_QUEUE);
    tokio::spawn(async move {
        while let Some(b) = from.recv().await {
            // the node may have ended; the rules stage still gets everything
            let _ = node_tx.send(b.clone()).await;
            if rules_tx.send(b).await.is_err() {
                break;
            }
        }
    });
    (rules_rx, node_rx)
}
