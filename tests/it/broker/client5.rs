//! A test client speaking MQTT 5 through rumqttc's independent v5 codec
//! (`rumqttc::v5::mqttbytes`): what it sends is encoded by rumqttc and
//! what the broker sends is decoded by it, so a wrong field cannot hide
//! behind our own codec. Owns no assertions beyond "the broker answered".

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::{QoS, v5 as r};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SECS;

/// A client speaking MQTT 5 through rumqttc's codec.
pub struct Client5 {
    pub s: TcpStream,
    buf: BytesMut,
}

impl Client5 {
    /// A TCP connection, nothing sent yet.
    pub async fn open(port: u16) -> Client5 {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Client5 {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Connects with `props`; returns the client and the CONNACK.
    pub async fn connect(
        port: u16,
        id: &str,
        clean: bool,
        props: r::ConnectProperties,
    ) -> (Client5, r::ConnAck) {
        let mut c = Client5::open(port).await;
        let connect = r::Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: clean,
            properties: Some(props),
        };
        c.send(r::Packet::Connect(connect, None, None)).await;
        match c.next(SECS).await {
            Some(r::Packet::ConnAck(a)) => (c, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: r::Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, None).expect("rumqttc encodes");
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).await.expect("write");
    }

    /// The next packet; `None` once the broker closed.
    pub async fn next(&mut self, within: Duration) -> Option<r::Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match r::Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("rumqttc cannot decode what the broker sent: {e:?}"),
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("nothing within {within:?}"),
            }
        }
    }

    /// The next PUBLISH (acknowledged at QoS 1).
    pub async fn publish_in(&mut self, within: Duration) -> r::Publish {
        loop {
            match self.next(within).await {
                Some(r::Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.send(r::Packet::PubAck(r::PubAck::new(p.pkid, None)))
                            .await;
                    }
                    return p;
                }
                Some(_) => {}
                None => panic!("closed while waiting for a PUBLISH"),
            }
        }
    }

    /// PUBLISHes until `quiet` passes without a packet.
    pub async fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<r::Publish> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(quiet, self.next(SECS)).await {
                Ok(Some(r::Packet::Publish(p))) => out.push(p),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return out,
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        pkid: u16,
        filter: r::Filter,
        id: Option<usize>,
    ) -> Vec<r::SubscribeReasonCode> {
        let props = id.map(|id| r::SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        });
        let mut s = r::Subscribe::new(filter, props);
        s.pkid = pkid;
        self.send(r::Packet::Subscribe(s)).await;
        loop {
            match self.next(SECS).await {
                Some(r::Packet::SubAck(a)) => return a.return_codes,
                Some(_) => {}
                None => panic!("closed while waiting for SUBACK"),
            }
        }
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        pkid: u16,
        props: Option<r::PublishProperties>,
    ) {
        let mut p = r::Publish::new(topic, qos, Bytes::copy_from_slice(payload), props);
        p.pkid = pkid;
        self.send(r::Packet::Publish(p)).await;
    }

    /// The reason code of the DISCONNECT the broker sent before closing.
    pub async fn disconnect_reason(&mut self) -> u8 {
        loop {
            match self.next(SECS).await {
                Some(r::Packet::Disconnect(d)) => return d.reason_code as u8,
                Some(_) => {}
                None => panic!("closed without a DISCONNECT"),
            }
        }
    }
}

pub fn props() -> r::ConnectProperties {
    r::ConnectProperties::new()
}
