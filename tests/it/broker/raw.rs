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
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if let Some(w) = &will {
        flags |= 0x04 | (w.qos << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if login.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    string(client_id.as_bytes(), &mut body);
    if let Some(w) = &will {
        string(w.topic.as_bytes(), &mut body);
        string(w.payload, &mut body);
    }
    if let Some((u, p)) = login {
        string(u.as_bytes(), &mut body);
        string(p.as_bytes(), &mut body);
    }
    packet(0x10, &body)
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

/// How long [`connect_raw`] waits for the answer (generous: 1,000 clients
/// connecting at once queue behind rumqttd's accept loop).
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
