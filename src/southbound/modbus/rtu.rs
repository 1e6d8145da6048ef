//! `modbus-rtu`: one source per serial port. Every device on the port is a
//! unit on one bus; the bus serialises their requests, keeps the inter-frame
//! silence (3.5 character times, 1.75 ms above 19200 baud), drains stale
//! bytes before each request, and serves the unit that is due first. A dead
//! unit backs off (see `device.rs`), so it costs one timeout per probe and
//! not one per cycle of the others.
//!
//! Owns the serial port and the bus schedule. Must not decode values.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Response, Slave};
use tokio_serial::SerialStream;
use tracing::{Instrument, debug, info_span, warn};

use super::device::Poller;
use super::link::{self, CallError, Link};
use super::{ModbusRtuConfig, Parity, writes};
use crate::southbound::commands::{Routes, WriteCommand};
use crate::southbound::{Source, SourceContext, SourceFuture};

/// The devices sharing one serial port, and the port's line settings.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub port: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    pub devices: Vec<ModbusRtuConfig>,
}

impl BusConfig {
    /// `9600 8N1`.
    pub fn line(&self) -> String {
        format!(
            "{} {}{}{}",
            self.baud,
            self.data_bits,
            self.parity.letter(),
            self.stop_bits
        )
    }

    /// The silence a frame needs before it (t3.5 of the Modbus serial spec).
    pub fn silence(&self) -> Duration {
        if self.baud > 19_200 {
            return Duration::from_micros(1750);
        }
        let bits = 1
            + u64::from(self.data_bits)
            + u64::from(self.parity != Parity::None)
            + u64::from(self.stop_bits);
        Duration::from_micros(bits * 3_500_000 / u64::from(self.baud.max(1)))
    }
}

fn lock(port: &Mutex<SerialStream>) -> MutexGuard<'_, SerialStream> {
    // a poisoned lock only means a panic elsewhere mid-poll; the port is still usable
    port.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on the bus's port that tokio-modbus can own. Only the bus task
/// uses it, one request at a time; the lock is held for one poll call.
#[derive(Debug, Clone)]
struct PortHandle {
    port: Arc<Mutex<SerialStream>>,
    received: Arc<AtomicUsize>,
}

impl AsyncRead for PortHandle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *lock(&self.port)).poll_read(cx, buf);
        self.received
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for PortHandle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.port)).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.port)).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.port)).poll_shutdown(cx)
    }
}

/// The bus: the open port, the tokio-modbus context over it, and the time
/// the line last carried a frame.
pub(super) struct RtuLink {
    cfg: BusConfig,
    port: Option<PortHandle>,
    ctx: Option<Context>,
    quiet_since: Instant,
}

impl RtuLink {
    fn new(cfg: BusConfig) -> Self {
        RtuLink {
            cfg,
            port: None,
            ctx: None,
            quiet_since: Instant::now(),
        }
    }

    fn open(&mut self) -> Result<PortHandle, CallError> {
        if let Some(p) = &self.port {
            return Ok(p.clone());
        }
        let c = &self.cfg;
        let builder = tokio_serial::new(c.port.to_string_lossy(), c.baud)
            .data_bits(if c.data_bits == 7 {
                tokio_serial::DataBits::Seven
            } else {
                tokio_serial::DataBits::Eight
            })
            .parity(c.parity.into())
            .stop_bits(if c.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .flow_control(tokio_serial::FlowControl::None);
        let stream = SerialStream::open(&builder)
            .map_err(|e| CallError::Io(format!("cannot open {}: {e}", c.port.display())))?;
        debug!(port = %c.port.display(), line = %c.line(), "serial port open");
        let handle = PortHandle {
            port: Arc::new(Mutex::new(stream)),
            received: Arc::new(AtomicUsize::new(0)),
        };
        self.port = Some(handle.clone());
        Ok(handle)
    }

    /// Throws away bytes nobody asked for (a late reply to a timed-out request).
    fn drain(port: &PortHandle) -> usize {
        let mut buf = [0u8; 256];
        let mut n = 0;
        let mut guard = lock(&port.port);
        while let Ok(k) = guard.try_read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    }
}

impl Link for RtuLink {
    async fn call(
        &mut self,
        unit: u8,
        req: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let port = self.open()?;
        tokio::time::sleep_until(self.quiet_since + self.cfg.silence()).await;
        let stale = Self::drain(&port);
        if stale > 0 {
            debug!(bytes = stale, "dropped stale bytes before the request");
        }
        let ctx = self
            .ctx
            .get_or_insert_with(|| tokio_modbus::client::rtu::attach(port.clone()));
        ctx.set_slave(Slave(unit));
        port.received.store(0, Ordering::Relaxed);
        let r = match tokio::time::timeout(timeout, ctx.call(req)).await {
            Ok(r) => link::classify(r),
            Err(_) => match port.received.load(Ordering::Relaxed) {
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
                warn!(port = %self.cfg.port.display(), error = %e, "serial port failed; reopening");
                self.port = None;
            }
        }
        r
    }
}

/// A running serial bus with its units.
pub struct RtuBus {
    cfg: BusConfig,
    name: String,
    commands: mpsc::Receiver<WriteCommand>,
}

impl RtuBus {
    /// Makes the bus source and routes its devices' commands to it.
    pub fn new(cfg: BusConfig, routes: &mut Routes) -> Self {
        let (tx, rx) = Routes::queue();
        for d in &cfg.devices {
            routes.add(&d.name, tx.clone());
        }
        RtuBus {
            name: cfg.port.display().to_string(),
            cfg,
            commands: rx,
        }
    }
}

impl Source for RtuBus {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let span = info_span!("bus", port = %self.name);
        Box::pin(self.bus_loop(ctx).instrument(span))
    }
}

impl RtuBus {
    async fn bus_loop(mut self, ctx: SourceContext) {
        let mut pollers: Vec<Poller> = self
            .cfg
            .devices
            .iter()
            .map(|d| Poller::new(&d.name, &d.common()))
            .collect();
        let mut link = RtuLink::new(self.cfg.clone());
        let mut commands_open = true;
        // the unit due first; ties go to config order
        while let Some(next) = (0..pollers.len()).min_by_key(|&i| pollers[i].next_due) {
            let due = pollers[next].next_due;
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => break,
                cmd = self.commands.recv(), if commands_open => {
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
                    if !ok { return; }
                }
            }
        }
        for p in &mut pollers {
            p.stopped(&ctx).await;
        }
    }
}
