//! A hand-made Modbus server on TCP that speaks MBAP (Modbus TCP), raw RTU
//! frames or Modbus ASCII frames (a serial-to-Ethernet converter with units behind it),
//! answers from [`Registers`] like a real device, and gets replies wrong on
//! demand the way real devices do: wrong transaction ids, late replies,
//! replies byte by byte, wrong byte counts, a close after every reply.

#![allow(dead_code)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::{Request, Response, SlaveRequest};

use crate::modbus::server::{Registers, crc16};

/// How the server frames its messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    Mbap,
    Rtu,
    /// Modbus ASCII: `:`, hex, LRC, CR LF.
    Ascii,
}

fn lrc(d: &[u8]) -> u8 {
    d.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
}

/// The ways this server gets its replies wrong.
#[derive(Debug, Default)]
pub struct Misbehaviour {
    /// Replies still to send with transaction id + 1 (MBAP).
    pub wrong_tid: u32,
    /// Send replies one byte at a time, this far apart.
    pub trickle: Option<Duration>,
    /// Reads of this holding address announce two bytes more than they carry.
    pub wrong_byte_count_at: Option<u16>,
    /// Close the connection after every reply.
    pub close_after_reply: bool,
    /// Replies still to hold back this long (sent late, after the client gave up).
    pub late: Option<(u32, Duration)>,
}

/// The server; stops on drop.
pub struct WireServer {
    pub addr: SocketAddr,
    pub faults: Arc<Mutex<Misbehaviour>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WireServer {
    pub async fn start(regs: Registers, framing: Framing, addr: &str) -> WireServer {
        let listener = TcpListener::bind(addr).await.expect("bind wire server");
        let addr = listener.local_addr().expect("local addr");
        let faults = Arc::new(Mutex::new(Misbehaviour::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (f, c, k) = (faults.clone(), connections.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (regs, f) = (regs.clone(), f.clone());
                let h = tokio::spawn(serve(stream, regs, framing, f));
                k.lock().expect("conns lock").push(h);
            }
        });
        WireServer {
            addr,
            faults,
            connections,
            task,
            conns,
        }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Misbehaviour> {
        self.faults.lock().expect("faults lock")
    }
}

impl Drop for WireServer {
    /// Stops like a power cut: the listener and every connection go.
    fn drop(&mut self) {
        self.task.abort();
        for h in self.conns.lock().expect("conns lock").iter() {
            h.abort();
        }
    }
}

async fn serve(
    mut s: TcpStream,
    regs: Registers,
    framing: Framing,
    faults: Arc<Mutex<Misbehaviour>>,
) {
    let _ = s.set_nodelay(true);
    loop {
        let (tid, unit, pdu) = match framing {
            Framing::Mbap => {
                let mut h = [0u8; 7];
                if s.read_exact(&mut h).await.is_err() {
                    return;
                }
                let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
                let mut pdu = vec![0u8; len.saturating_sub(1)];
                if s.read_exact(&mut pdu).await.is_err() {
                    return;
                }
                (u16::from_be_bytes([h[0], h[1]]), h[6], pdu)
            }
            Framing::Rtu => {
                let mut h = [0u8; 2];
                if s.read_exact(&mut h).await.is_err() {
                    return;
                }
                let rest = match h[1] {
                    15 | 16 => {
                        let mut f = [0u8; 5];
                        if s.read_exact(&mut f).await.is_err() {
                            return;
                        }
                        let mut more = vec![0u8; usize::from(f[4]) + 2];
                        if s.read_exact(&mut more).await.is_err() {
                            return;
                        }
                        [f.to_vec(), more].concat()
                    }
                    22 => read_n(&mut s, 8).await,
                    _ => read_n(&mut s, 6).await,
                };
                if rest.is_empty() {
                    return;
                }
                let pdu = [&h[1..], &rest[..rest.len() - 2]].concat();
                (0, h[0], pdu)
            }
            Framing::Ascii => {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                loop {
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    if b[0] == b'\n' {
                        break;
                    }
                    line.push(b[0]);
                }
                let text = String::from_utf8_lossy(&line);
                let hex = text.trim().trim_start_matches(':');
                let raw: Vec<u8> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                let (body, sum) = raw.split_at(raw.len() - 1);
                assert_eq!(lrc(body), sum[0], "the gateway sent a bad LRC");
                (0, body[0], body[1..].to_vec())
            }
        };
        let Some(req) = decode_request(&pdu) else {
            return;
        };
        let fc = pdu[0];
        let answer = regs.answer(SlaveRequest {
            slave: unit,
            request: req.clone(),
        });
        let reply_pdu = match answer {
            Ok(None) => continue,
            Ok(Some(resp)) => encode_response(&resp),
            Err(e) => vec![fc | 0x80, e.into()],
        };
        let (mut reply_pdu, trickle, close, late, wrong_tid) = {
            let mut f = faults.lock().expect("faults lock");
            let mut p = reply_pdu;
            if let (Request::ReadHoldingRegisters(a, _), Some(at)) = (&req, f.wrong_byte_count_at)
                && *a == at
            {
                p[1] += 2;
            }
            let late = match &mut f.late {
                Some((n, d)) if *n > 0 => {
                    *n -= 1;
                    Some(*d)
                }
                _ => None,
            };
            let wrong = f.wrong_tid > 0;
            if wrong {
                f.wrong_tid -= 1;
            }
            (p, f.trickle, f.close_after_reply, late, wrong)
        };
        let frame = match framing {
            Framing::Mbap => {
                let tid = if wrong_tid { tid.wrapping_add(1) } else { tid };
                let mut out = tid.to_be_bytes().to_vec();
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&((reply_pdu.len() + 1) as u16).to_be_bytes());
                out.push(unit);
                out.append(&mut reply_pdu);
                out
            }
            Framing::Rtu => {
                let mut out = vec![unit];
                out.append(&mut reply_pdu);
                let crc = crc16(&out);
                out.extend_from_slice(&crc.to_le_bytes());
                out
            }
            Framing::Ascii => {
                let mut raw = vec![unit];
                raw.append(&mut reply_pdu);
                raw.push(lrc(&raw));
                let mut out = b":".to_vec();
                for b in raw {
                    out.extend_from_slice(format!("{b:02X}").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out
            }
        };
        if let Some(d) = late {
            tokio::time::sleep(d).await;
        }
        let sent = match trickle {
            Some(gap) => {
                let mut ok = true;
                for b in &frame {
                    ok &= s.write_all(&[*b]).await.is_ok();
                    tokio::time::sleep(gap).await;
                }
                ok
            }
            None => s.write_all(&frame).await.is_ok(),
        };
        if !sent || close {
            return;
        }
    }
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    match s.read_exact(&mut b).await {
        Ok(_) => b,
        Err(_) => Vec::new(),
    }
}

fn u16_at(p: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([p[i], p[i + 1]])
}

fn decode_request(p: &[u8]) -> Option<Request<'static>> {
    if p.len() < 5 {
        return None;
    }
    let (a, b) = (u16_at(p, 1), u16_at(p, 3));
    Some(match p[0] {
        1 => Request::ReadCoils(a, b),
        2 => Request::ReadDiscreteInputs(a, b),
        3 => Request::ReadHoldingRegisters(a, b),
        4 => Request::ReadInputRegisters(a, b),
        5 => Request::WriteSingleCoil(a, b == 0xFF00),
        6 => Request::WriteSingleRegister(a, b),
        15 => Request::WriteMultipleCoils(
            a,
            Cow::Owned(
                (0..usize::from(b))
                    .map(|i| p[6 + i / 8] >> (i % 8) & 1 == 1)
                    .collect(),
            ),
        ),
        16 => Request::WriteMultipleRegisters(
            a,
            Cow::Owned((0..usize::from(b)).map(|i| u16_at(p, 6 + 2 * i)).collect()),
        ),
        22 => Request::MaskWriteRegister(a, b, u16_at(p, 5)),
        _ => return None,
    })
}

fn encode_response(r: &Response) -> Vec<u8> {
    let words = |fc: u8, w: &[u16]| {
        let mut o = vec![fc, (w.len() * 2) as u8];
        for x in w {
            o.extend_from_slice(&x.to_be_bytes());
        }
        o
    };
    let bits = |fc: u8, b: &[bool]| {
        let mut o = vec![fc, b.len().div_ceil(8) as u8];
        o.resize(2 + b.len().div_ceil(8), 0);
        for (i, on) in b.iter().enumerate() {
            o[2 + i / 8] |= u8::from(*on) << (i % 8);
        }
        o
    };
    let two = |fc: u8, a: u16, b: u16| {
        [vec![fc], a.to_be_bytes().to_vec(), b.to_be_bytes().to_vec()].concat()
    };
    match r {
        Response::ReadCoils(b) => bits(1, b),
        Response::ReadDiscreteInputs(b) => bits(2, b),
        Response::ReadHoldingRegisters(w) => words(3, w),
        Response::ReadInputRegisters(w) => words(4, w),
        Response::WriteSingleCoil(a, on) => two(5, *a, if *on { 0xFF00 } else { 0 }),
        Response::WriteSingleRegister(a, w) => two(6, *a, *w),
        Response::WriteMultipleCoils(a, n) => two(15, *a, *n),
        Response::WriteMultipleRegisters(a, n) => two(16, *a, *n),
        Response::MaskWriteRegister(a, and, or) => {
            [two(22, *a, *and), or.to_be_bytes().to_vec()].concat()
        }
        other => panic!("no encoding for {other:?}"),
    }
}
