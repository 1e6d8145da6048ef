//! One upstream connection: TCP (and TLS through rustls), the
//! CONNECT/CONNACK exchange, and framed MQTT packets in the version of
//! `uplink.protocol` (`wire.rs`); at MQTT 5 the topic aliases of this
//! connection, when the broker allows them.
//!
//! Owns the socket, its read and write buffers and the topic aliases.
//! Must not keep any session state: that is `outgoing.rs` and the link's
//! (`mod.rs`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, Publish, PublishProperties};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::options::Options;
use super::server::Limits;
use super::wire::{self, Protocol, WireError};

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("no answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the broker closed the connection with DISCONNECT {0}")]
    Disconnected(String),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("a packet from upstream of {0} bytes exceeds uplink.max_packet_size")]
    TooLarge(usize),
    #[error("bad packet: {0}")]
    Codec(WireError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("no PINGRESP within the keep-alive")]
    NoPingResp,
}

/// The byte stream under MQTT: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// What a CONNACK that accepted the connection said.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub session_present: bool,
    pub limits: Limits,
}

/// An open connection whose CONNACK accepted the session.
pub struct Conn {
    io: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    proto: Protocol,
    /// Largest packet read (`uplink.max_packet_size`).
    max_packet: usize,
    /// Largest packet written: ours, and the broker's Maximum Packet Size.
    send_max: usize,
    io_timeout: Duration,
    aliases: Aliases,
}

/// The topic aliases of one connection (MQTT 5): the first PUBLISH of a
/// topic carries the topic and a new alias, the next ones the alias and
/// an empty topic. Once the broker's maximum is taken, new topics go in
/// full.
struct Aliases {
    max: u16,
    map: HashMap<Bytes, u16>,
}

impl Aliases {
    /// The PUBLISH to write for `p`, when an alias applies.
    fn apply(&mut self, p: &Publish) -> Option<Publish> {
        if self.max == 0 || p.topic.is_empty() {
            return None;
        }
        let (alias, known) = match self.map.get(&p.topic) {
            Some(a) => (*a, true),
            None if self.map.len() < usize::from(self.max) => {
                let a = self.map.len() as u16 + 1;
                self.map.insert(p.topic.clone(), a);
                (a, false)
            }
            None => return None,
        };
        let mut out = p.clone();
        let props = out.properties.get_or_insert_with(no_properties);
        props.topic_alias = Some(alias);
        if known {
            out.topic = Bytes::new();
        }
        Some(out)
    }
}

/// Publish properties with nothing set.
pub fn no_properties() -> PublishProperties {
    PublishProperties::default()
}

impl Conn {
    /// Connects, sends CONNECT (`clean` is its clean-session / clean-start
    /// flag) and reads the CONNACK, all within `io_timeout`; returns the
    /// connection and what the CONNACK said.
    pub async fn open(o: &Options, clean: bool) -> Result<(Conn, Accepted), ConnError> {
        let t = o.io_timeout;
        let within = |what| move |_| ConnError::Timeout(t, what);
        let addr = format!("{}:{}", o.host, o.port);
        let tcp = tokio::time::timeout(t, TcpStream::connect((o.host.as_str(), o.port)))
            .await
            .map_err(within("TCP connect"))?
            .map_err(|source| ConnError::Connect {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &o.tls {
            Some((connector, name)) => Box::new(
                tokio::time::timeout(t, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(within("TLS handshake"))?
                    .map_err(|source| ConnError::Tls { addr, source })?,
            ),
            None => Box::new(tcp),
        };
        let mut conn = Conn {
            io,
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
            proto: o.protocol,
            max_packet: o.max_packet,
            send_max: o.max_packet,
            io_timeout: t,
            aliases: Aliases {
                max: 0,
                map: HashMap::new(),
            },
        };
        conn.queue(&o.connect_packet(clean))?;
        conn.flush().await?;
        let ack = tokio::time::timeout(t, async {
            loop {
                if let Some(p) = conn.next_packet()? {
                    return Ok::<_, ConnError>(p);
                }
                conn.fill().await?;
            }
        })
        .await
        .map_err(within("CONNACK"))??;
        match ack {
            Packet::ConnAck(a) if a.code == ConnectReturnCode::Success => {
                let limits = Limits::from_connack(a.properties.as_ref());
                if let Some(m) = limits.max_packet {
                    conn.send_max = conn.send_max.min(m as usize);
                }
                conn.aliases.max = limits.topic_alias_max;
                let accepted = Accepted {
                    session_present: a.session_present,
                    limits,
                };
                Ok((conn, accepted))
            }
            Packet::ConnAck(a) => Err(ConnError::Refused(a.code)),
            _ => Err(ConnError::Protocol("the first packet was not a CONNACK")),
        }
    }

    /// Encodes `p` behind what is waiting to be written.
    pub fn queue(&mut self, p: &Packet) -> Result<(), ConnError> {
        if let Packet::Publish(p) = p {
            return self.queue_publish(p);
        }
        wire::write(self.proto, p, &mut self.write, self.send_max).map_err(ConnError::Codec)
    }

    /// Encodes a PUBLISH behind what is waiting (without moving it into a
    /// `Packet`: the session keeps it for resending), with its topic
    /// alias when the broker allows them.
    pub fn queue_publish(&mut self, p: &Publish) -> Result<(), ConnError> {
        let aliased = match self.proto {
            Protocol::V5 => self.aliases.apply(p),
            Protocol::V311 => None,
        };
        let p = aliased.as_ref().unwrap_or(p);
        wire::write_publish(self.proto, p, &mut self.write, self.send_max).map_err(ConnError::Codec)
    }

    /// Whether packets wait to be written.
    pub fn has_output(&self) -> bool {
        !self.write.is_empty()
    }

    /// Writes what is queued; fails when a write makes no progress for
    /// `io_timeout` (a large backlog on a slow link takes as long as it
    /// takes, a dead link is found within the timeout).
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let t = self.io_timeout;
        let stalled = |_| ConnError::Timeout(t, "write");
        while !self.write.is_empty() {
            let n = tokio::time::timeout(t, self.io.write(&self.write))
                .await
                .map_err(stalled)??;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.write.advance(n);
        }
        tokio::time::timeout(t, self.io.flush())
            .await
            .map_err(stalled)??;
        Ok(())
    }

    /// The next whole packet already read, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        if self.read.is_empty() {
            return Ok(None);
        }
        match wire::read(self.proto, &mut self.read, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(WireError::Incomplete) => Ok(None),
            Err(WireError::TooLarge(size)) => Err(ConnError::TooLarge(size)),
            Err(e) => Err(ConnError::Codec(e)),
        }
    }

    /// Reads more bytes (cancel-safe: nothing read is lost when the
    /// future is dropped before it completes).
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        if self.read.capacity() - self.read.len() < 1024 {
            self.read.reserve(4096);
        }
        match self.io.read_buf(&mut self.read).await? {
            0 => Err(ConnError::Closed),
            _ => Ok(()),
        }
    }
}
