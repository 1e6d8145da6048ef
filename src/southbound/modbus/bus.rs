//! One RTU bus over any byte stream: the serial port of `modbus-rtu` or the
//! TCP connection to a serial-to-Ethernet converter of `modbus-rtu-tcp`.
//! The bus serialises the units' requests, keeps the inter-frame silence,
//! drains stale bytes before each request (a late reply to a timed-out
//! request), reopens the stream after it failed or the peer closed it,
//! sends broadcasts (unit 0) without waiting for a reply, and serves the
//! unit that is due first. Frames are RTU (tokio-modbus's codec) or ASCII
//! (`ascii.rs`, `framing: ascii`). A dead unit backs off (see `device.rs`), so it
//! costs one timeout per probe and not one per cycle of the others.
//!
//! Owns the stream and the bus schedule. Must not decode values, and must
//! not know whether the stream is a port or a socket ([`Opener`] does).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Response, Slave};
use tracing::{debug, warn};

use super::device::Poller;
use super::link::{self, CallError, Link};
use super::{Framing, ascii, writes};
use crate::southbound::SourceContext;
use crate::southbound::commands::WriteCommand;

/// How long a broadcast (unit 0) holds the bus: the turnaround delay the
/// serial line spec gives the units to act on it (100 to 200 ms).
pub(super) const BROADCAST_TURNAROUND: Duration = Duration::from_millis(100);

/// Opens the byte stream of one bus.
pub(super) trait Opener: Send + 'static {
    type Wire: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens (connects) the stream, within `timeout` where that can hang.
    fn open(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Wire, CallError>> + Send;
    /// Reads what is buffered without waiting: `Ok(0)` means the peer closed.
    fn try_read(wire: &mut Self::Wire, buf: &mut [u8]) -> io::Result<usize>;
    /// The silence a frame needs before it.
    fn silence(&self) -> Duration;
    /// The port or address, for logs.
    fn describe(&self) -> String;
}

fn lock<W>(m: &Mutex<W>) -> MutexGuard<'_, W> {
    // a poisoned lock only means a panic elsewhere mid-poll; the stream is still usable
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on the bus's stream that tokio-modbus can own. Only the bus task
/// uses it, one request at a time; the lock is held for one poll call.
struct Wire<W> {
    inner: Arc<Mutex<W>>,
    received: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

impl<W> Clone for Wire<W> {
    fn clone(&self) -> Self {
        Wire {
            inner: self.inner.clone(),
            received: self.received.clone(),
            sent: self.sent.clone(),
        }
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for Wire<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *lock(&self.inner)).poll_read(cx, buf);
        self.received
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        r
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Wire<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *lock(&self.inner)).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.sent.fetch_add(*n, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.inner)).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.inner)).poll_shutdown(cx)
    }
}

/// The bus: the open stream, the tokio-modbus context over it, and the time
/// the line last carried a frame.
pub(super) struct BusLink<O: Opener> {
    opener: O,
    wire: Option<Wire<O::Wire>>,
    ctx: Option<Context>,
    quiet_since: Instant,
    /// Close the stream after every poll step (`close_after_poll`).
    pub close_after_poll: bool,
    /// RTU frames (tokio-modbus) or ASCII frames (`ascii.rs`).
    pub framing: Framing,
}

impl<O: Opener> BusLink<O> {
    pub fn new(opener: O) -> Self {
        BusLink {
            opener,
            wire: None,
            ctx: None,
            quiet_since: Instant::now(),
            close_after_poll: false,
            framing: Framing::Rtu,
        }
    }

    /// Drops the stream; the next request opens it again.
    pub fn close(&mut self) {
        self.ctx = None;
        self.wire = None;
    }

    async fn wire(&mut self, timeout: Duration) -> Result<Wire<O::Wire>, CallError> {
        if let Some(w) = &self.wire {
            return Ok(w.clone());
        }
        let stream = self.opener.open(timeout).await?;
        debug!(bus = %self.opener.describe(), "bus open");
        let w = Wire {
            inner: Arc::new(Mutex::new(stream)),
            received: Arc::new(AtomicUsize::new(0)),
            sent: Arc::new(AtomicUsize::new(0)),
        };
        self.wire = Some(w.clone());
        Ok(w)
    }

    /// Throws away bytes nobody asked for. `Err` when the peer has closed.
    fn drain(wire: &Wire<O::Wire>) -> Result<usize, ()> {
        let mut buf = [0u8; 256];
        let mut n = 0;
        let mut guard = lock(&wire.inner);
        loop {
            match O::try_read(&mut guard, &mut buf) {
                Ok(0) => return Err(()),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(_) => return Err(()),
            }
        }
    }

    /// One exchange on the open stream. `Ok(None)` for a broadcast.
    async fn exchange(
        &mut self,
        unit: u8,
        req: &Request<'static>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let mut wire = self.wire(timeout).await?;
        tokio::time::sleep_until(self.quiet_since + self.opener.silence()).await;
        match Self::drain(&wire) {
            Ok(0) => {}
            Ok(stale) => debug!(bytes = stale, "dropped stale bytes before the request"),
            Err(()) => {
                // the converter closed the connection since the last request
                debug!(bus = %self.opener.describe(), "peer closed the stream; reopening");
                self.close();
                wire = self.wire(timeout).await?;
            }
        }
        if self.framing == Framing::Ascii {
            let r = ascii_exchange(&wire, unit, req, timeout).await;
            self.quiet_since = Instant::now();
            if matches!(r, Err(CallError::Io(_))) {
                warn!(bus = %self.opener.describe(), "bus stream failed; reopening");
                self.close();
            }
            return r;
        }
        let ctx = self
            .ctx
            .get_or_insert_with(|| tokio_modbus::client::rtu::attach(wire.clone()));
        ctx.set_slave(Slave(unit));
        wire.received.store(0, Ordering::Relaxed);
        wire.sent.store(0, Ordering::Relaxed);
        let wait = if unit == 0 {
            BROADCAST_TURNAROUND
        } else {
            timeout
        };
        let r = match tokio::time::timeout(wait, ctx.call(req.clone())).await {
            Ok(r) => link::classify(r),
            Err(_) if unit == 0 => {
                // a broadcast is never answered: sent is done
                self.ctx = None;
                self.quiet_since = Instant::now();
                return if wire.sent.load(Ordering::Relaxed) > 0 {
                    Ok(broadcast_done(req))
                } else {
                    Err(CallError::Io("broadcast could not be sent".into()))
                };
            }
            Err(_) => match wire.received.load(Ordering::Relaxed) {
                0 => Err(CallError::Timeout(timeout)),
                bytes => Err(CallError::Garbled {
                    bytes,
                    waited: timeout,
                }),
            },
        };
        self.quiet_since = Instant::now();
        if let Err(e) = &r {
            if e.needs_reset() {
                self.ctx = None;
            }
            if matches!(e, CallError::Io(_)) {
                warn!(bus = %self.opener.describe(), error = %e, "bus stream failed; reopening");
                self.close();
            }
        }
        r
    }
}

/// One request in Modbus ASCII: the frame out, then bytes in until a line
/// that starts with `:` ends with LF, all within `timeout`.
async fn ascii_exchange<W: AsyncRead + AsyncWrite + Unpin>(
    wire: &Wire<W>,
    unit: u8,
    req: &Request<'static>,
    timeout: Duration,
) -> Result<Response, CallError> {
    let frame = ascii::frame(unit, &ascii::request_pdu(req)?);
    let mut w = wire.clone();
    let io = |e: io::Error| CallError::Io(e.to_string());
    w.write_all(&frame).await.map_err(io)?;
    w.flush().await.map_err(io)?;
    if unit == 0 {
        tokio::time::sleep(BROADCAST_TURNAROUND).await;
        return Ok(broadcast_done(req));
    }
    let mut line: Vec<u8> = Vec::with_capacity(64);
    let mut got = 0usize;
    let read = async {
        let mut buf = [0u8; 128];
        loop {
            let n = w.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return Err(CallError::Io("connection closed".into()));
            }
            got += n;
            for &b in &buf[..n] {
                match b {
                    b':' => {
                        line.clear();
                        line.push(b);
                    }
                    b'\n' if line.first() == Some(&b':') => return Ok(()),
                    b'\r' | b'\n' => {}
                    _ if !line.is_empty() => line.push(b),
                    _ => {}
                }
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r?,
        Err(_) if got == 0 => return Err(CallError::Timeout(timeout)),
        Err(_) => {
            return Err(CallError::Garbled {
                bytes: got,
                waited: timeout,
            });
        }
    }
    let (from, pdu) = ascii::parse_line(&line)?;
    if from != unit {
        return Err(CallError::BadReply(format!(
            "reply from unit {from} to a request to unit {unit}"
        )));
    }
    ascii::response(req, &pdu)
}

/// What a write would have answered, for a broadcast nobody answers.
fn broadcast_done(req: &Request<'static>) -> Response {
    match req {
        Request::WriteSingleCoil(a, b) => Response::WriteSingleCoil(*a, *b),
        Request::WriteMultipleCoils(a, c) => Response::WriteMultipleCoils(*a, c.len() as u16),
        Request::WriteSingleRegister(a, w) => Response::WriteSingleRegister(*a, *w),
        Request::WriteMultipleRegisters(a, w) => {
            Response::WriteMultipleRegisters(*a, w.len() as u16)
        }
        Request::MaskWriteRegister(a, and, or) => Response::MaskWriteRegister(*a, *and, *or),
        _ => Response::Custom(0, Default::default()),
    }
}

impl<O: Opener> Link for BusLink<O> {
    async fn call(
        &mut self,
        unit: u8,
        req: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let reused = self.wire.is_some();
        let r = self.exchange(unit, &req, timeout).await;
        if reused && matches!(r, Err(CallError::Io(_))) {
            // a stream that was open before can have died while idle: one
            // fresh attempt before it counts
            return self.exchange(unit, &req, timeout).await;
        }
        r
    }
}

/// Runs the units of one bus until `ctx.cancel` fires: the unit due first
/// goes next (ties go to config order); a write waits for the step in
/// progress and then takes the bus.
pub(super) async fn run<O: Opener>(
    mut pollers: Vec<Poller>,
    mut link: BusLink<O>,
    mut commands: mpsc::Receiver<WriteCommand>,
    ctx: SourceContext,
) {
    let mut commands_open = true;
    while let Some(next) = (0..pollers.len()).min_by_key(|&i| pollers[i].next_due) {
        let due = pollers[next].next_due;
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break,
            cmd = commands.recv(), if commands_open => {
                let Some(cmd) = cmd else { commands_open = false; continue };
                let Some(i) = pollers.iter().position(|p| *p.name == *cmd.device) else { continue };
                let ok = tokio::select! {
                    _ = ctx.cancel.cancelled() => break,
                    ok = writes::handle(&mut pollers[i], &mut link, cmd, &ctx) => ok,
                };
                if !ok { return; }
            }
            _ = tokio::time::sleep_until(due) => {
                let ok = tokio::select! {
                    _ = ctx.cancel.cancelled() => break,
                    ok = pollers[next].step(&mut link, &ctx) => ok,
                };
                if link.close_after_poll {
                    link.close();
                }
                if !ok { return; }
            }
        }
    }
    for p in &mut pollers {
        p.stopped(&ctx).await;
    }
}
