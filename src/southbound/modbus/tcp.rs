//! `modbus-tcp`: one source per device, with its own connection. A device
//! that is down costs only its own task time; others are never delayed.
//!
//! Owns the TCP connection: connect (with the device timeout), drop and
//! reconnect after any error but an exception, one fresh attempt when a
//! kept connection turns out closed, and `close_after_poll`. Must not decode values
//! (that is `device.rs`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{Request, Response, Slave};
use tracing::{Instrument, debug, info_span};

use super::ModbusTcpConfig;
use super::device::Poller;
use super::link::{self, CallError, Link};
use super::writes;
use crate::southbound::commands::{Routes, WriteCommand};
use crate::southbound::{Source, SourceContext, SourceFuture};

/// The connection to one Modbus TCP server.
pub(super) struct TcpLink {
    address: String,
    ctx: Option<Context>,
}

impl TcpLink {
    fn new(address: &str) -> Self {
        TcpLink {
            address: address.to_string(),
            ctx: None,
        }
    }

    async fn connect(&mut self, timeout: Duration) -> Result<&mut Context, CallError> {
        if self.ctx.is_none() {
            let addr = self.address.clone();
            let fut = async move {
                let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(stream)
            };
            let stream = match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(CallError::Io(format!("connect {}: {e}", self.address)));
                }
                Err(_) => {
                    return Err(CallError::Io(format!(
                        "connect {}: no answer within {timeout:?}",
                        self.address
                    )));
                }
            };
            debug!(address = %self.address, "connected");
            self.ctx = Some(tokio_modbus::client::tcp::attach(stream));
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| CallError::Io("not connected".into()))
    }
}

impl Link for TcpLink {
    async fn call(
        &mut self,
        unit: u8,
        req: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let reused = self.ctx.is_some();
        let r = self.exchange(unit, req.clone(), timeout).await;
        if reused && matches!(r, Err(CallError::Io(_))) {
            // the server may have closed the idle connection (some close
            // after every request): one attempt on a fresh one first
            debug!(address = %self.address, "connection lost since the last request; reconnecting");
            return self.exchange(unit, req, timeout).await;
        }
        r
    }
}

impl TcpLink {
    async fn exchange(
        &mut self,
        unit: u8,
        req: Request<'static>,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let ctx = self.connect(timeout).await?;
        ctx.set_slave(Slave(unit));
        let r = match tokio::time::timeout(timeout, ctx.call(req)).await {
            Ok(r) => link::classify(r),
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        if let Err(e) = &r
            && e.needs_reset()
        {
            // out of step after a timeout or a bad reply: start afresh
            self.ctx = None;
        }
        r
    }
}

/// A running `modbus-tcp` device.
pub struct TcpDevice {
    cfg: ModbusTcpConfig,
    commands: mpsc::Receiver<WriteCommand>,
}

impl TcpDevice {
    /// Makes the source and registers its command queue.
    pub fn new(cfg: ModbusTcpConfig, routes: &mut Routes) -> Self {
        let (tx, rx) = Routes::queue();
        routes.add(&cfg.name, tx);
        TcpDevice { cfg, commands: rx }
    }
}

impl Source for TcpDevice {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let span = info_span!("device", device = %self.cfg.name, address = %self.cfg.address);
        Box::pin(self.poll_loop(ctx).instrument(span))
    }
}

impl TcpDevice {
    async fn poll_loop(mut self, ctx: SourceContext) {
        let mut poller =
            Poller::new(&self.cfg.name, &self.cfg.common()).learning(ctx.data_dir.as_ref());
        let mut link = TcpLink::new(&self.cfg.address);
        let mut commands_open = true;
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => break,
                cmd = self.commands.recv(), if commands_open => {
                    let Some(cmd) = cmd else { commands_open = false; continue };
                    let done = tokio::select! {
                        _ = ctx.cancel.cancelled() => break,
                        ok = writes::handle(&mut poller, &mut link, cmd, &ctx) => ok,
                    };
                    if !done { return; }
                }
                _ = tokio::time::sleep_until(poller.next_due) => {
                    let ok = tokio::select! {
                        _ = ctx.cancel.cancelled() => break,
                        ok = poller.step(&mut link, &ctx) => ok,
                    };
                    if self.cfg.close_after_poll {
                        link.ctx = None;
                    }
                    if !ok { return; }
                }
            }
        }
        poller.stopped(&ctx).await;
    }
}
