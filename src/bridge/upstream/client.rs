//! The forwarder's side of the upstream connection: requests queued to
//! the link ([`Client`], behind the [`Upstream`] trait so the forwarder's
//! transitions are unit-tested with a mock).
//!
//! Owns the request channel's sending end. Must not wait: every request is
//! queued at once or refused (`false`), because the forwarder polls the
//! link itself and waiting for room would never end.

use rumqttc::QoS;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::sync::mpsc;

use super::wire::v5_qos;

/// A request to the link (`mod.rs`).
#[derive(Debug)]
pub enum Request {
    /// Send `publish` (its packet id chosen by the forwarder); `key`
    /// orders resends.
    Publish {
        publish: Publish,
        key: i64,
    },
    /// Send the PUBREL of the QoS 2 message `pkid`.
    Release {
        pkid: u16,
        key: i64,
    },
    Subscribe {
        filter: String,
        qos: QoS,
    },
    /// PUBACK (QoS 1) or PUBREC (QoS 2) an incoming publish.
    Ack {
        pkid: u16,
        qos: V5QoS,
    },
    Disconnect,
}

/// The requests the forwarder makes of the upstream connection.
pub trait Upstream {
    /// Sends a message; `pkid` is its packet id (0 for QoS 0), `key` its
    /// place in the resend order (the outbox row id).
    fn publish(&self, p: Outgoing) -> bool;
    /// Sends the PUBREL of a QoS 2 message whose PUBREC came (and whose
    /// row is marked released in the outbox).
    fn release(&self, pkid: u16, key: i64) -> bool;
    fn subscribe(&self, filter: String, qos: QoS) -> bool;
    fn disconnect(&self) -> bool;
    /// Acknowledges an incoming QoS 1/2 publish (PUBACK, or PUBREC for
    /// QoS 2): a command is acknowledged only once it was handed on.
    fn ack(&self, publish: &Publish) -> bool;
}

/// A message for [`Upstream::publish`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload: bytes::Bytes,
    pub pkid: u16,
    pub key: i64,
    /// MQTT 5 properties (message expiry, user properties, response
    /// topic...); a 3.1.1 uplink sends none.
    pub properties: Option<PublishProperties>,
}

/// The link's request queue.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Request>,
}

impl Client {
    /// A client and the receiving end for the link; `capacity` requests
    /// may wait.
    pub fn new(capacity: usize) -> (Client, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Client { tx }, rx)
    }

    fn send(&self, r: Request) -> bool {
        self.tx.try_send(r).is_ok()
    }
}

impl Upstream for Client {
    fn publish(&self, o: Outgoing) -> bool {
        // the topic's bytes move into the packet (no copy)
        let publish = Publish {
            dup: false,
            qos: v5_qos(o.qos),
            retain: o.retain,
            topic: bytes::Bytes::from(o.topic.into_bytes()),
            pkid: if o.qos == QoS::AtMostOnce { 0 } else { o.pkid },
            payload: o.payload,
            properties: o.properties,
        };
        self.send(Request::Publish {
            publish,
            key: o.key,
        })
    }

    fn release(&self, pkid: u16, key: i64) -> bool {
        self.send(Request::Release { pkid, key })
    }

    fn subscribe(&self, filter: String, qos: QoS) -> bool {
        self.send(Request::Subscribe { filter, qos })
    }

    fn disconnect(&self) -> bool {
        self.send(Request::Disconnect)
    }

    fn ack(&self, publish: &Publish) -> bool {
        self.send(Request::Ack {
            pkid: publish.pkid,
            qos: publish.qos,
        })
    }
}
