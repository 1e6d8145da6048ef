//! The poller's side of learned limits (`learn.rs` has the steps and the
//! file): loading what a device taught before, planning again, and the
//! device's link as the probe that learning asks.
//!
//! Owns no state of its own. Must not decode values or send readings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_modbus::ExceptionCode;
use tracing::info;

use super::super::learn::{self, Probe};
use super::super::link::{CallError, Link};
use super::super::merge::{self, ReadRequest};
use super::{Poller, count};

impl Poller {
    /// The pollers of the units on one bus, each keeping what it learns in
    /// the context's `data_dir`.
    pub fn for_bus<'a>(
        devices: impl IntoIterator<Item = (&'a str, super::super::Common)>,
        ctx: &crate::southbound::SourceContext,
    ) -> Vec<Poller> {
        devices
            .into_iter()
            .map(|(name, common)| Poller::on_bus(name, &common).learning(ctx.data_dir.as_ref()))
            .collect()
    }

    /// Keeps what the device teaches in `data_dir`, and starts from what it
    /// taught before (when its unit and points are the same).
    pub fn learning(mut self, data_dir: Option<&Arc<Path>>) -> Self {
        self.data_dir = data_dir.cloned();
        let Some(dir) = &self.data_dir else {
            return self;
        };
        if let Some(l) = learn::load(dir, &self.name, &self.learned.fingerprint) {
            info!(device = %self.name, learned = %l.summary(), "using the Modbus limits this device taught before");
            self.learned = l;
            self.replan();
        }
        self
    }

    /// The requests again, from the points, the limits and what was learned.
    pub(super) fn replan(&mut self) {
        if !self.broadcast {
            let limits = self.learned.limits(self.limits);
            self.requests = merge::merge_avoiding(&self.spans, limits, &self.learned.holes)
                .into_iter()
                .map(std::sync::Arc::new)
                .collect();
        }
        crate::metrics::get().set_learned(&self.name, self.learned.summary());
    }

    /// The device refused `req` (at the cursor): learns its limits, plans
    /// again and goes on with the first new request that reaches into
    /// `req`'s range. `false` when nothing new was learned (the device
    /// stopped answering, or the refusal is not about size or holes).
    pub(super) async fn learn_from<L: Link>(&mut self, link: &mut L, req: &ReadRequest) -> bool {
        let mut probe = LinkProbe {
            link,
            unit: self.unit,
            timeout: self.timeout,
            name: &self.name,
        };
        let Some(l) = learn::learn(req, self.limits, &self.learned, &mut probe).await else {
            return false;
        };
        if l == self.learned {
            return false;
        }
        info!(device = %self.name, unit = self.unit, request = %req, learned = %l.summary(),
            "device refused a merged read: learned its limits; reads are merged within them from now on");
        self.learned = l;
        self.replan();
        if let Some(dir) = &self.data_dir {
            learn::save(dir, &self.name, &self.learned);
        }
        let from = (req.table, u32::from(req.start));
        self.cursor = self
            .requests
            .iter()
            .position(|r| (r.table, u32::from(r.start) + u32::from(r.count)) > from)
            .unwrap_or(self.requests.len());
        true
    }
}

/// The device's link as a [`Probe`] for learning.
struct LinkProbe<'a, L> {
    link: &'a mut L,
    unit: u8,
    timeout: Duration,
    name: &'a str,
}

impl<L: Link> Probe for LinkProbe<'_, L> {
    async fn accepts(&mut self, req: &ReadRequest) -> Option<bool> {
        let r = self
            .link
            .call(self.unit, req.to_request(), self.timeout)
            .await;
        count(self.name, &r);
        match r {
            Ok(_) => Some(true),
            Err(CallError::Exception(
                ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue,
            )) => Some(false),
            Err(_) => None,
        }
    }
}
