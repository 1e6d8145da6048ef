//! A real Modbus server for the tests (tokio-modbus `tcp-server` and
//! `rtu-server`) with register contents the test sets, a log of the
//! requests it served, silent units, and faults on demand.
//!
//! Addresses the test did not set answer `IllegalDataAddress`, as a real
//! device with holes in its register map does.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// The registers of one unit.
#[derive(Debug, Clone, Default)]
pub struct Bank {
    pub holding: BTreeMap<u16, u16>,
    pub input: BTreeMap<u16, u16>,
    pub coils: BTreeMap<u16, bool>,
    pub discrete: BTreeMap<u16, bool>,
}

impl Bank {
    pub fn set_holding(&mut self, at: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.holding.insert(at + i as u16, *w);
        }
    }
    pub fn set_input(&mut self, at: u16, words: &[u16]) {
        for (i, w) in words.iter().enumerate() {
            self.input.insert(at + i as u16, *w);
        }
    }
}

/// A fault the server injects into replies to reads of one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Reply with one register fewer than asked for.
    ShortReply,
    /// Reply to a holding read with an input-register reply (wrong function code).
    WrongFunction,
    /// Answer with this exception.
    Exception(ExceptionCode),
}

#[derive(Debug, Default)]
pub struct State {
    pub units: HashMap<u8, Bank>,
    /// Units that never answer.
    pub silent: HashSet<u8>,
    /// `(unit, request)` for every request received, in order.
    pub log: Vec<(u8, Request<'static>)>,
    /// Faults by (unit, start address of a read).
    pub faults: HashMap<(u8, u16), Fault>,
    /// Replies are held back this long (a slow device: late replies).
    pub delay: Duration,
    /// Busy answers (exception 06) still to give, by unit.
    pub busy: HashMap<u8, u32>,
    /// Reads of more registers than this are refused with exception 03
    /// (illegal data value), as many small devices do.
    pub max_read: Option<u16>,
}

/// Shared server state: the test reads and changes it while the server runs.
#[derive(Clone, Default)]
pub struct Registers(Arc<Mutex<State>>);

impl Registers {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("server state lock")
    }

    pub fn unit(&self, unit: u8, f: impl FnOnce(&mut Bank)) {
        f(self.lock().units.entry(unit).or_default());
    }

    pub fn holding(&self, unit: u8, at: u16, n: u16) -> Vec<u16> {
        let s = self.lock();
        (at..at + n)
            .map(|a| s.units[&unit].holding.get(&a).copied().unwrap_or(0xDEAD))
            .collect()
    }

    pub fn coil(&self, unit: u8, at: u16) -> Option<bool> {
        self.lock().units[&unit].coils.get(&at).copied()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.lock().log.len()
    }

    pub fn requests_of(&self, unit: u8) -> usize {
        self.lock().log.iter().filter(|(u, _)| *u == unit).count()
    }

    /// The answer of a real device (`None`: no reply). Unit 0 is a
    /// broadcast: every unit applies the write, nobody answers.
    pub fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let mut s = self.lock();
        let unit = req.slave;
        s.log.push((unit, req.request.clone()));
        if unit == 0 {
            let units: Vec<u8> = s.units.keys().copied().collect();
            drop(s);
            for u in units {
                let mut st = self.lock();
                let _ = apply(&mut st, u, req.request.clone(), None);
            }
            return Ok(None);
        }
        if s.silent.contains(&unit) {
            return Ok(None);
        }
        if let Some(n) = s.busy.get_mut(&unit)
            && *n > 0
        {
            *n -= 1;
            return Err(ExceptionCode::ServerDeviceBusy);
        }
        let start = match &req.request {
            Request::ReadCoils(a, _)
            | Request::ReadDiscreteInputs(a, _)
            | Request::ReadHoldingRegisters(a, _)
            | Request::ReadInputRegisters(a, _) => Some(*a),
            _ => None,
        };
        if let (Some(max), Request::ReadHoldingRegisters(_, n) | Request::ReadInputRegisters(_, n)) =
            (s.max_read, &req.request)
            && *n > max
        {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let fault = start.and_then(|a| s.faults.get(&(unit, a)).copied());
        if let Some(Fault::Exception(e)) = fault {
            return Err(e);
        }
        apply(&mut s, unit, req.request, fault)
    }
}

fn apply(
    s: &mut State,
    unit: u8,
    request: Request<'static>,
    fault: Option<Fault>,
) -> Result<Option<Response>, ExceptionCode> {
    {
        let Some(bank) = s.units.get_mut(&unit) else {
            return Ok(None);
        };
        let words = |m: &BTreeMap<u16, u16>, a: u16, n: u16| -> Result<Vec<u16>, ExceptionCode> {
            (a..a.saturating_add(n))
                .map(|i| m.get(&i).copied().ok_or(ExceptionCode::IllegalDataAddress))
                .collect()
        };
        let bits = |m: &BTreeMap<u16, bool>, a: u16, n: u16| -> Result<Vec<bool>, ExceptionCode> {
            (a..a.saturating_add(n))
                .map(|i| m.get(&i).copied().ok_or(ExceptionCode::IllegalDataAddress))
                .collect()
        };
        let resp = match request {
            Request::ReadHoldingRegisters(a, n) => {
                let mut w = words(&bank.holding, a, n)?;
                match fault {
                    Some(Fault::ShortReply) => {
                        w.pop();
                        Response::ReadHoldingRegisters(w)
                    }
                    Some(Fault::WrongFunction) => Response::ReadInputRegisters(w),
                    _ => Response::ReadHoldingRegisters(w),
                }
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(words(&bank.input, a, n)?)
            }
            Request::ReadCoils(a, n) => Response::ReadCoils(bits(&bank.coils, a, n)?),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(bits(&bank.discrete, a, n)?)
            }
            Request::WriteSingleRegister(a, w) => {
                words(&bank.holding, a, 1)?;
                bank.holding.insert(a, w);
                Response::WriteSingleRegister(a, w)
            }
            Request::WriteMultipleRegisters(a, ws) => {
                words(&bank.holding, a, ws.len() as u16)?;
                for (i, w) in ws.iter().enumerate() {
                    bank.holding.insert(a + i as u16, *w);
                }
                Response::WriteMultipleRegisters(a, ws.len() as u16)
            }
            Request::WriteSingleCoil(a, b) => {
                bits(&bank.coils, a, 1)?;
                bank.coils.insert(a, b);
                Response::WriteSingleCoil(a, b)
            }
            Request::WriteMultipleCoils(a, bs) => {
                bits(&bank.coils, a, bs.len() as u16)?;
                for (i, b) in bs.iter().enumerate() {
                    bank.coils.insert(a + i as u16, *b);
                }
                Response::WriteMultipleCoils(a, bs.len() as u16)
            }
            Request::MaskWriteRegister(a, and, or) => {
                let cur = words(&bank.holding, a, 1)?[0];
                bank.holding.insert(a, (cur & and) | (or & !and));
                Response::MaskWriteRegister(a, and, or)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(resp))
    }
}

impl Service for Registers {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Exception>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let delay = self.lock().delay;
        let answer = self.answer(req);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}

/// A Modbus TCP server on loopback; stops (and drops its connections) on drop.
pub struct TcpServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpServer {
    /// Serves `regs` on `addr` (port 0 for a free one).
    pub async fn start(regs: Registers, addr: &str) -> TcpServer {
        let listener = TcpListener::bind(addr).await.expect("bind modbus server");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let task = tokio::spawn(async move {
            let on_connected = |stream, socket_addr| {
                let regs = regs.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, socket_addr, |_| {
                        Ok(Some(regs.clone()))
                    })
                }
            };
            let _ = server.serve(&on_connected, |_err| {}).await;
        });
        TcpServer { addr, task }
    }

    /// Stops serving: the listener closes and open connections drop.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An RTU server on the master side of a pty pair; the gateway opens `path`
/// (the slave side).
pub struct RtuServer {
    pub path: String,
    task: JoinHandle<()>,
    /// Keeps the slave side open so the master never sees a hang-up.
    _slave: tokio_serial::SerialStream,
}

impl RtuServer {
    pub fn start(regs: Registers) -> RtuServer {
        use tokio_serial::SerialPort;
        // the slave side takes no lock (set_exclusive(false) would take a
        // shared flock and keep the gateway from opening the path)
        let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
        let path = slave.name().expect("pty slave has a path");
        let server = tokio_modbus::server::rtu::Server::new(master);
        let task = tokio::spawn(async move {
            let _ = server.serve_forever(regs).await;
        });
        RtuServer {
            path,
            task,
            _slave: slave,
        }
    }
}

impl Drop for RtuServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Modbus RTU CRC (CRC-16/MODBUS), appended little-endian.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A hand-made RTU device on a pty: answers every FC3 request of 1 register
/// with `value`, and corrupts the CRC while `corrupt` is set. For faults the
/// tokio-modbus server cannot make.
pub struct RawRtuDevice {
    pub path: String,
    pub corrupt: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
    _slave: tokio_serial::SerialStream,
}

impl RawRtuDevice {
    pub fn start(value: u16) -> RawRtuDevice {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_serial::SerialPort;
        let (mut master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
        let path = slave.name().expect("pty slave has a path");
        let corrupt = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let c = corrupt.clone();
        let task = tokio::spawn(async move {
            let mut req = [0u8; 8];
            while master.read_exact(&mut req).await.is_ok() {
                let [hi, lo] = value.to_be_bytes();
                let mut reply = vec![req[0], 3, 2, hi, lo];
                let mut crc = crc16(&reply);
                if c.load(Ordering::Relaxed) {
                    crc ^= 0x5555;
                }
                reply.extend_from_slice(&crc.to_le_bytes());
                if master.write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
        RawRtuDevice {
            path,
            corrupt,
            task,
            _slave: slave,
        }
    }
}

impl Drop for RawRtuDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}
