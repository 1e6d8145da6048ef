//! A raw MQTT 3.1.1 codec for tests that must control every byte (CONNACK
//! codes, keep-alive, malformed packets, websocket framing): packets are
//! built as byte vectors and read back as (first byte, body).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Remaining-length encoding (variable byte integer).
pub fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// A last will: topic, payload, QoS, retain.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT (protocol level 4).
pub fn connect(
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    login: Option<(&str, &str)>,
    will: Option<Will>,
) -> Vec<u8> {
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    let mut fields: Vec<&[u8]> = vec![client_id.as_bytes()];
    if let Some(w) = &will {
        flags |= 0x04 | (w.qos << 3);
        if w.retain {
            flags |= 0x20;
        }
        fields.extend([w.topic.as_bytes(), w.payload]);
    }
    if let Some((u, p)) = login {
        flags |= 0xC0;
        fields.extend([u.as_bytes(), p.as_bytes()]);
    }
    connect_fields(flags, keep_alive, &fields)
}

/// CONNECT with any protocol name and level (`MQIsdp`/3 is MQTT 3.1): clean
/// session, keep-alive 30 s, no will, no login.
pub fn connect_as(name: &[u8], level: u8, client_id: &str) -> Vec<u8> {
    connect_named(name, level, 0x02, 30, &[client_id.as_bytes()])
}

/// SUBSCRIBE to one filter.
pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    string(filter.as_bytes(), &mut body);
    body.push(qos);
    packet(0x82, &body)
}

/// PUBLISH; `pkid` is used when `qos > 0`.
pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// CONNECT `MQTT`/4 with exactly this flags byte and these payload fields
/// (each written as a length-prefixed string), for malformed CONNECTs.
pub fn connect_fields(flags: u8, keep_alive: u16, fields: &[&[u8]]) -> Vec<u8> {
    connect_named(b"MQTT", 4, flags, keep_alive, fields)
}

/// CONNECT with this protocol name and level, flags byte, keep-alive and
/// payload fields (each written as a length-prefixed string).
fn connect_named(name: &[u8], level: u8, flags: u8, keep_alive: u16, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    string(name, &mut body);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for f in fields {
        string(f, &mut body);
    }
    packet(0x10, &body)
}

/// SUBSCRIBE with any first byte and (filter bytes, options byte) pairs.
pub fn subscribe_raw(first: u8, pkid: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, opts) in filters {
        string(f, &mut body);
        body.push(*opts);
    }
    packet(first, &body)
}

/// UNSUBSCRIBE with any first byte.
pub fn unsubscribe_raw(first: u8, pkid: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for f in filters {
        string(f, &mut body);
    }
    packet(first, &body)
}

pub fn unsubscribe(pkid: u16, filter: &str) -> Vec<u8> {
    unsubscribe_raw(0xA2, pkid, &[filter.as_bytes()])
}

/// PUBLISH with any first byte and topic bytes; `pkid` is written when given.
pub fn publish_raw(first: u8, topic: &[u8], pkid: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    if let Some(id) = pkid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;
pub const SUBACK: u8 = 0x90;
pub const UNSUBACK: u8 = 0xB0;
pub const PINGRESP: u8 = 0xD0;

/// PUBACK / PUBREC / PUBREL / PUBCOMP (`first` is one of the constants above).
pub fn ack(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

/// A PUBLISH as the broker sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pkid: Option<u16>,
    pub payload: Vec<u8>,
}

impl Publish {
    /// `None` if (first, body) is not a PUBLISH.
    pub fn parse(first: u8, body: &[u8]) -> Option<Publish> {
        if first & 0xF0 != 0x30 {
            return None;
        }
        let qos = (first >> 1) & 3;
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
        let mut at = 2 + tlen;
        let pkid = (qos > 0).then(|| {
            at += 2;
            u16::from_be_bytes([body[at - 2], body[at - 1]])
        });
        Some(Publish {
            dup: first & 0x08 != 0,
            qos,
            retain: first & 1 != 0,
            topic,
            pkid,
            payload: body[at..].to_vec(),
        })
    }
}

/// A connected raw client: every packet is written and read by the test.
pub struct Raw {
    pub s: TcpStream,
}

impl Raw {
    /// Connects with `connect` and asserts CONNACK 0; returns session present too.
    pub async fn open(port: u16, connect: &[u8]) -> (Raw, bool) {
        let (s, outcome) = connect_raw(port, connect).await;
        match outcome {
            ConnectOutcome::ConnAck {
                session_present,
                code: 0,
            } => (Raw { s }, session_present),
            other => panic!("CONNECT refused: {other:?}"),
        }
    }

    /// Connects a clean session with keep-alive 30 s.
    pub async fn connect(port: u16, id: &str) -> Raw {
        Self::open(port, &connect(id, true, 30, None, None)).await.0
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write packet");
    }

    /// The next packet; `None` when the broker closed; panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(within, read_packet(&mut self.s))
            .await
            .unwrap_or_else(|_| panic!("no packet within {within:?}"))
    }

    /// The next packet whose first byte is `first` (others are dropped).
    pub async fn expect(&mut self, first: u8, within: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some((f, body)) if f == first => return body,
                Some(_) => {}
                None => panic!("connection closed while waiting for {first:#x}"),
            }
        }
    }

    /// Sends SUBSCRIBE for one filter and returns the SUBACK return code.
    pub async fn subscribe(&mut self, pkid: u16, filter: &str, qos: u8) -> u8 {
        self.send(&subscribe(pkid, filter, qos)).await;
        let body = self.expect(SUBACK, Duration::from_secs(10)).await;
        assert_eq!(&body[..2], &pkid.to_be_bytes(), "SUBACK packet id");
        body[2]
    }

    /// The next PUBLISH (other packets are dropped).
    pub async fn publish_in(&mut self, within: Duration) -> Publish {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some((f, body)) => {
                    if let Some(p) = Publish::parse(f, &body) {
                        return p;
                    }
                }
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// PUBLISHes arriving until `quiet` passes without any packet.
    pub async fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut out = Vec::new();
        while let Ok(Some((f, body))) = tokio::time::timeout(quiet, read_packet(&mut self.s)).await
        {
            out.extend(Publish::parse(f, &body));
        }
        out
    }
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Reads one packet: `Some((first byte, body))`, `None` on EOF or a reset.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let first = r.read_u8().await.ok()?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = r.read_u8().await.ok()?;
        len |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// What the broker answered to a CONNECT.
#[derive(Debug, PartialEq)]
pub enum ConnectOutcome {
    /// CONNACK with this return code.
    ConnAck { session_present: bool, code: u8 },
    /// The connection closed without a CONNACK.
    ClosedWithoutConnAck,
}

impl ConnectOutcome {
    /// CONNACK `code` with session present 0.
    pub fn connack(code: u8) -> ConnectOutcome {
        ConnectOutcome::ConnAck {
            session_present: false,
            code,
        }
    }
}

/// How long [`connect_raw`] waits for the answer (generous: 1,000 clients
/// connecting at once on 2 shared cores).
const CONNACK_WAIT: Duration = Duration::from_secs(30);

/// Opens a TCP connection and sends CONNECT; returns the stream and the answer.
pub async fn connect_raw(port: u16, connect: &[u8]) -> (TcpStream, ConnectOutcome) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(connect).await.expect("write CONNECT");
    let outcome = match tokio::time::timeout(CONNACK_WAIT, read_packet(&mut s)).await {
        Ok(Some((0x20, body))) if body.len() == 2 => ConnectOutcome::ConnAck {
            session_present: body[0] & 1 == 1,
            code: body[1],
        },
        Ok(Some((first, body))) => panic!("expected CONNACK, got {first:#x} {body:?}"),
        Ok(None) => ConnectOutcome::ClosedWithoutConnAck,
        Err(_) => panic!("no answer to CONNECT within {CONNACK_WAIT:?}"),
    };
    (s, outcome)
}

/// Waits until the peer closes `s` (EOF or reset), reading and dropping
/// anything it sends; `false` if it is still open after `within`.
pub async fn closed_within<R: AsyncRead + Unpin>(s: &mut R, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}
