//! `modbus-rtu`: one source per serial port. Every device on the port is a
//! unit on one bus (`bus.rs`: serialised requests, stale bytes drained, the
//! unit due first goes next); the inter-frame silence is 3.5 character
//! times, 1.75 ms above 19200 baud.
//!
//! Owns opening the serial port and its line settings. Must not decode values.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tracing::{Instrument, debug, info_span};

use super::bus::{self, BusLink, Opener};
use super::device::Poller;
use super::link::CallError;
use super::{Framing, ModbusRtuConfig, Parity};
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
    pub framing: Framing,
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

/// Opens the serial port of one bus.
pub(super) struct SerialOpener(BusConfig);

impl Opener for SerialOpener {
    type Wire = SerialStream;

    async fn open(&mut self, _timeout: Duration) -> Result<SerialStream, CallError> {
        let c = &self.0;
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
        Ok(stream)
    }

    fn try_read(wire: &mut SerialStream, buf: &mut [u8]) -> io::Result<usize> {
        match wire.try_read(buf) {
            // a pty reads 0 while nobody holds the other side: nothing to drain
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            r => r,
        }
    }

    fn silence(&self) -> Duration {
        self.0.silence()
    }

    fn describe(&self) -> String {
        self.0.port.display().to_string()
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
        let rx = routes.queue_for(cfg.devices.iter().map(|d| d.name.as_str()));
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
    async fn bus_loop(self, ctx: SourceContext) {
        let devices = self
            .cfg
            .devices
            .iter()
            .map(|d| (d.name.as_str(), d.common()));
        let pollers = Poller::for_bus(devices, &ctx);
        let mut link = BusLink::new(SerialOpener(self.cfg.clone()));
        link.framing = self.cfg.framing;
        bus::run(pollers, link, self.commands, ctx).await;
    }
}
