//! One upstream connection: TCP (and TLS through rustls), the
//! CONNECT/CONNACK exchange, and framed MQTT 3.1.1 packets on rumqttc's
//! `mqttbytes` codec.
//!
//! Owns the socket and its read and write buffers. Must not keep any
//! session state: that is `outgoing.rs` and the link's (`mod.rs`).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::options::Options;

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
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("a packet from upstream of {0} bytes exceeds uplink.max_packet_size")]
    TooLarge(usize),
    #[error("bad packet from upstream: {0:?}")]
    Codec(CodecError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("no PINGRESP within the keep-alive")]
    NoPingResp,
}

/// The byte stream under MQTT: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// An open connection whose CONNACK accepted the session.
pub struct Conn {
    io: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    max_packet: usize,
    io_timeout: Duration,
}

impl Conn {
    /// Connects, sends CONNECT (`clean` is its clean-session flag) and
    /// reads the CONNACK, all within `io_timeout`; returns the
    /// connection and the CONNACK's session-present flag.
    pub async fn open(o: &Options, clean: bool) -> Result<(Conn, bool), ConnError> {
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
            max_packet: o.max_packet,
            io_timeout: t,
        };
        let mut connect = o.connect.clone();
        connect.clean_session = clean;
        conn.queue(&Packet::Connect(connect))?;
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
                Ok((conn, a.session_present))
            }
            Packet::ConnAck(a) => Err(ConnError::Refused(a.code)),
            _ => Err(ConnError::Protocol("the first packet was not a CONNACK")),
        }
    }

    /// Encodes `p` behind what is waiting to be written.
    pub fn queue(&mut self, p: &Packet) -> Result<(), ConnError> {
        p.write(&mut self.write, self.max_packet)
            .map(|_| ())
            .map_err(ConnError::Codec)
    }

    /// Encodes a PUBLISH behind what is waiting (without moving it into a
    /// `Packet`: the session keeps it for resending).
    pub fn queue_publish(&mut self, p: &Publish) -> Result<(), ConnError> {
        if p.size() > self.max_packet {
            return Err(ConnError::Codec(CodecError::OutgoingPacketTooLarge {
                pkt_size: p.size(),
                max: self.max_packet,
            }));
        }
        p.write(&mut self.write)
            .map(|_| ())
            .map_err(ConnError::Codec)
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
        match Packet::read(&mut self.read, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(CodecError::PayloadSizeLimitExceeded(size)) => Err(ConnError::TooLarge(size)),
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
