//! `modbus-rtu-tcp`: RTU frames (unit id, PDU, CRC; no MBAP header), or
//! ASCII frames with `framing: ascii`, over a TCP connection to a serial-to-Ethernet converter. Every device with the
//! same `address` is a unit behind that converter: one connection, one bus
//! (`bus.rs`), so their requests never overlap on the serial side. A lost
//! connection is opened again on the next request; a connection the
//! converter closed while idle is noticed before the request goes out.
//!
//! Owns the TCP connection to the converter. Must not decode values.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

use super::bus::{self, BusLink, Opener};
use super::device::Poller;
use super::link::CallError;
use super::{Framing, ModbusRtuTcpConfig};
use crate::southbound::commands::{Routes, WriteCommand};
use crate::southbound::{Source, SourceContext, SourceFuture};

/// The gap kept between frames on the connection. The converter times the
/// serial side itself; this only keeps two frames from running together
/// in converters that cut frames by gaps (the t3.5 of a fast line).
const FRAME_GAP: Duration = Duration::from_micros(1750);

/// The devices behind one converter.
#[derive(Debug, Clone)]
pub struct TcpBusConfig {
    pub address: String,
    pub framing: Framing,
    pub close_after_poll: bool,
    pub devices: Vec<ModbusRtuTcpConfig>,
}

/// Groups `modbus-rtu-tcp` devices by address: one bus (one source) per
/// converter, in config order.
pub fn tcp_buses(devices: &[&ModbusRtuTcpConfig]) -> Vec<TcpBusConfig> {
    let mut out: Vec<TcpBusConfig> = Vec::new();
    for d in devices {
        match out.iter_mut().find(|b| b.address == d.address) {
            Some(b) => b.devices.push((*d).clone()),
            None => out.push(TcpBusConfig {
                address: d.address.clone(),
                framing: d.framing,
                close_after_poll: d.close_after_poll,
                devices: vec![(*d).clone()],
            }),
        }
    }
    out
}

/// Connects to the converter.
struct TcpOpener {
    address: String,
}

impl Opener for TcpOpener {
    type Wire = TcpStream;

    async fn open(&mut self, timeout: Duration) -> Result<TcpStream, CallError> {
        let addr = self.address.as_str();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                s.set_nodelay(true)
                    .map_err(|e| CallError::Io(format!("connect {addr}: {e}")))?;
                Ok(s)
            }
            Ok(Err(e)) => Err(CallError::Io(format!("connect {addr}: {e}"))),
            Err(_) => Err(CallError::Io(format!(
                "connect {addr}: no answer within {timeout:?}"
            ))),
        }
    }

    fn try_read(wire: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        wire.try_read(buf)
    }

    fn silence(&self) -> Duration {
        FRAME_GAP
    }

    fn describe(&self) -> String {
        self.address.clone()
    }
}

/// A running converter with its units.
pub struct RtuTcpBus {
    cfg: TcpBusConfig,
    commands: mpsc::Receiver<WriteCommand>,
}

impl RtuTcpBus {
    /// Makes the bus source and routes its devices' commands to it.
    pub fn new(cfg: TcpBusConfig, routes: &mut Routes) -> Self {
        let rx = routes.queue_for(cfg.devices.iter().map(|d| d.name.as_str()));
        RtuTcpBus { cfg, commands: rx }
    }
}

impl Source for RtuTcpBus {
    fn name(&self) -> &str {
        &self.cfg.address
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        let span = info_span!("converter", address = %self.cfg.address);
        Box::pin(
            async move {
                let devices = self
                    .cfg
                    .devices
                    .iter()
                    .map(|d| (d.name.as_str(), d.common()));
                let pollers = Poller::for_bus(devices, &ctx);
                let mut link = BusLink::new(TcpOpener {
                    address: self.cfg.address.clone(),
                });
                link.close_after_poll = self.cfg.close_after_poll;
                link.framing = self.cfg.framing;
                bus::run(pollers, link, self.commands, ctx).await;
            }
            .instrument(span),
        )
    }
}
