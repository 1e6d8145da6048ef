//! Southbound: the sources that read field devices and turn samples into
//! [`Reading`]s. This file holds the [`Source`] trait, the context every
//! source gets, and [`build_all`], which makes the sources for the
//! configured devices through their kinds ([`kind::Kind`]).
//!
//! Owns the contract between adapters and the pipeline. Must not publish
//! readings itself (that is the rules stage) nor touch the broker directly:
//! sources only send into the channels of their [`SourceContext`].

pub mod catalogue;
pub mod commands;
pub mod devices;
pub mod guard;
pub(crate) mod kind;
pub mod line;
pub(crate) mod metrics;
pub mod modbus;
pub mod serial;
pub mod simulated;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Counter;
use crate::reading::batch::ReadingsSender;
use crate::reading::status;
use crate::reading::{Publish, Reading};
use crate::recent::DeviceLast;
use devices::DeviceConfig;

/// A boxed future a source runs as.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A running unit of the southbound side: one device, or one serial bus
/// shared by several devices.
pub trait Source: Send + 'static {
    /// A name for logs (the device, or the bus's port).
    fn name(&self) -> &str;
    /// Polls until `ctx.cancel` fires. Errors are the source's own business:
    /// it reports them in device status and keeps going.
    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture;
}

/// What a source may use. Cheap to clone.
///
/// Channel policy: both channels are bounded and never drop. A full
/// `readings` channel (bounded in readings, see
/// [`batch`](crate::reading::batch)) makes the source wait (its next poll
/// is late), which is the back-pressure a slow rules stage should cause.
#[derive(Clone)]
pub struct SourceContext {
    pub gateway: Arc<str>,
    readings: ReadingsSender,
    publishes: mpsc::Sender<Publish>,
    pub cancel: CancellationToken,
    /// Where sources keep what they learn about their devices (`None`:
    /// kept in memory only).
    pub data_dir: Option<Arc<std::path::Path>>,
}

impl SourceContext {
    pub fn new(
        gateway: Arc<str>,
        readings: ReadingsSender,
        publishes: mpsc::Sender<Publish>,
        cancel: CancellationToken,
    ) -> Self {
        SourceContext {
            gateway,
            readings,
            publishes,
            cancel,
            data_dir: None,
        }
    }

    /// Sources keep what they learn about their devices in `data_dir`.
    pub fn with_data_dir(mut self, data_dir: &std::path::Path) -> Self {
        self.data_dir = Some(data_dir.into());
        self
    }

    /// Hands a reading to the rules stage. Returns `false` when the pipeline
    /// has shut down (the source should stop).
    pub async fn send(&self, reading: Reading) -> bool {
        crate::metrics::get()
            .readings
            .get_or_create(&metrics::device(&reading.device))
            .inc();
        crate::recent::record(&reading);
        self.readings.send(vec![reading]).await.is_ok()
    }

    /// Hands readings of `feed`'s device to the rules stage as one batch,
    /// in order: counted and recorded as last values with one lock, sent
    /// with one wait for room. Returns `false` when the pipeline has shut
    /// down (the source should stop).
    pub async fn send_all(&self, feed: &DeviceFeed, readings: Vec<Reading>) -> bool {
        if readings.is_empty() {
            return true;
        }
        feed.count(&readings);
        self.readings.send(readings).await.is_ok()
    }

    /// Publishes a message that is not a reading (a write result).
    pub async fn publish(&self, p: Publish) -> bool {
        self.publishes.send(p).await.is_ok()
    }

    /// Publishes the retained `{gateway}/status/{device}` message.
    pub async fn set_status(&self, device: &str, online: bool, error: Option<&str>) -> bool {
        crate::metrics::get().set_device(device, online, error);
        let p = status::device(&self.gateway, device, online, error);
        self.publishes.send(p).await.is_ok()
    }
}

/// What a source keeps per device to hand its readings on cheaply: the
/// device's readings counter and its last-value entry, looked up at the
/// first batch and kept (the counter's series appears with the first
/// reading, as with [`SourceContext::send`]).
pub struct DeviceFeed {
    pub device: Arc<str>,
    handles: OnceLock<(Counter, DeviceLast)>,
}

impl DeviceFeed {
    pub fn new(device: &Arc<str>) -> Self {
        DeviceFeed {
            device: device.clone(),
            handles: OnceLock::new(),
        }
    }

    fn count(&self, readings: &[Reading]) {
        debug_assert!(readings.iter().all(|r| r.device == self.device));
        let (counter, last) = self.handles.get_or_init(|| {
            let c = crate::metrics::get()
                .readings
                .get_or_create(&metrics::device(&self.device))
                .clone();
            (c, DeviceLast::of(&self.device))
        });
        counter.inc_by(readings.len() as u64);
        last.record_all(readings);
    }
}

/// Makes the sources for the configured devices (one per device, or one
/// per shared bus, as each kind says), and registers the write guards of
/// writable points and the command queues of sources that accept writes
/// in `routes`.
pub fn build_all(devices: &[DeviceConfig], routes: &mut commands::Routes) -> Vec<Box<dyn Source>> {
    for d in devices {
        for (point, limits) in d.write_limits() {
            routes.guard(d.name(), point, limits);
        }
    }
    devices::sources(devices, routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Quality, Value};

    #[tokio::test]
    async fn a_feed_counts_and_records_a_batch_and_its_series_comes_with_the_first_reading() {
        let (tx, mut rx) = crate::reading::batch::channel(16);
        let (ptx, _prx) = mpsc::channel(4);
        let ctx = SourceContext::new("gw".into(), tx, ptx, CancellationToken::new());
        let dev: Arc<str> = "feed-unit-test".into();
        let feed = DeviceFeed::new(&dev);
        let series = "fieldgate_readings_total{device=\"feed-unit-test\"}";
        assert!(!crate::metrics::get().render().contains(series));
        let reading = |p: &str, v: i64| Reading {
            device: dev.clone(),
            point: p.into(),
            value: Value::Int(v),
            unit: None,
            ts: v,
            quality: Quality::Good,
        };
        let batch = vec![reading("a", 1), reading("b", 2), reading("c", 3)];
        assert!(ctx.send_all(&feed, batch.clone()).await);
        assert!(ctx.send_all(&feed, Vec::new()).await);
        assert_eq!(rx.recv().await, Some(batch));
        let text = crate::metrics::get().render();
        assert!(text.contains(&format!("{series} 3")), "{text}");
        let last = crate::recent::of_device(&dev);
        assert_eq!(last.len(), 3);
        assert_eq!(last["c"].value, Value::Int(3));
        drop(rx);
        assert!(!ctx.send_all(&feed, vec![reading("a", 4)]).await);
    }
}
