//! The connected clients as the status page lists them (the ports leaf's
//! [`Clients`], implemented by [`BrokerHandle`]): client id, address,
//! protocol level, subscriptions, messages queued, connected since and the
//! messages dropped for each.
//!
//! Owns [`Seen`], what a session remembers of its connection for this list
//! (set when a connection attaches, [`attached`]; drops counted by the
//! router where it counts them in the broker's totals). Reads sessions
//! only: must not change them otherwise or touch sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use super::handle::BrokerHandle;
use super::packet::Protocol;
use super::session::Cell;
use crate::ports::{ClientInfo, Clients};
use crate::reading::now_ms;

/// What a session remembers of the connection it is attached to.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub peer: Option<SocketAddr>,
    pub level: u8,
    /// ms since the epoch
    pub since: i64,
    /// Messages this session did not get (kept across reconnects).
    pub dropped: u64,
}

/// The protocol level a CONNECT named.
fn level(p: Protocol) -> u8 {
    match p {
        Protocol::V31 => 3,
        Protocol::V311 => 4,
        Protocol::V5 => 5,
    }
}

/// Notes the connection that just attached to `cell`'s session.
pub fn attached(cell: &Arc<Cell>, peer: SocketAddr, protocol: Protocol) {
    let mut s = cell.lock();
    s.seen.peer = Some(peer);
    s.seen.level = level(protocol);
    s.seen.since = now_ms();
}

impl Clients for BrokerHandle {
    fn clients(&self) -> Vec<ClientInfo> {
        let mut out: Vec<ClientInfo> = self
            .router
            .attached()
            .iter()
            .filter_map(|cell| {
                let s = cell.lock();
                (!s.internal).then(|| ClientInfo {
                    client_id: s.client_id.to_string(),
                    address: s.seen.peer.map_or_else(String::new, |p| p.to_string()),
                    protocol_level: s.seen.level,
                    subscriptions: s.subscriptions.len(),
                    queued: s.pending(),
                    connected_since: s.seen.since,
                    dropped: s.seen.dropped,
                })
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::broker::router::{Attach, Router};
    use crate::broker::session::{Limits, Peer};
    use crate::broker::subscription::SubOpts;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn lists_connected_clients_with_queue_and_drops_not_the_gateways_own() {
        let limits = Limits::for_tests(1);
        let router = Arc::new(Router::new(limits, None, None));
        let handle = BrokerHandle {
            router: router.clone(),
        };
        let _own = handle.subscribe("commands", &["a/#".to_string()], 16);
        let attach = Attach {
            client_id: "hmi".into(),
            clean: true,
            persistent: false,
            expiry: std::time::Duration::ZERO,
            peer: Peer::default(),
            user: None,
            no_local: false,
            kick: CancellationToken::new(),
        };
        let (cell, _, _) = router.connect(attach).expect("a slot");
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        attached(&cell, peer, Protocol::V31);
        let qos0 = SubOpts::qos(0);
        router.subscribe(&cell, vec![("a/#".into(), qos0), ("b".into(), qos0)], None);
        // nobody writes the client's queue out: one message fits; the next
        // waits FULL_WAIT (500 ms) and is dropped, the last at once
        for _ in 0..3 {
            let m = Message::new("a/x".into(), bytes::Bytes::from_static(b"1"), 0, false);
            router.publish(m).await;
        }
        let list = handle.clients();
        assert_eq!(list.len(), 1, "{list:?}");
        let c = &list[0];
        assert!(c.connected_since > 0);
        assert_eq!(
            *c,
            ClientInfo {
                client_id: "hmi".into(),
                address: "10.0.0.5:4000".into(),
                protocol_level: 3,
                subscriptions: 2,
                queued: 1,
                connected_since: c.connected_since,
                dropped: 2,
            }
        );
    }
}
