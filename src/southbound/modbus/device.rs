//! The poll state machine of one Modbus device, shared by TCP devices and
//! the units of a serial bus: walks the planned requests, decodes replies
//! into readings, retries, splits refused merged requests, backs off from a
//! dead device with jitter, and keeps `{gateway}/status/{device}` current.
//!
//! Owns the device's timing and status. Must not own a transport: every
//! request goes through the [`Link`] its caller lends for one step, so a bus
//! can interleave several devices and a failed read publishes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, Response};
use tracing::{debug, info, warn};

use super::Common;
use super::learn::{self, Learned};
use super::link::{self, CallError, Link};
use super::merge::{Limits, ReadRequest, Span};
use super::points::Codec;
use crate::reading::{Reading, Value, now_ms};
use crate::southbound::{DeviceFeed, SourceContext};

/// What one poll cycle did so far (reported when it completes).
#[derive(Debug, Clone, Copy)]
struct CycleCount {
    started: Instant,
    requests: u32,
    errors: u32,
}

impl CycleCount {
    fn started() -> CycleCount {
        CycleCount {
            started: Instant::now(),
            requests: 0,
            errors: 0,
        }
    }
}

/// Shortest first wait before probing a device that stopped answering.
/// What one request's answer means for the device's cycle.
enum Outcome {
    /// The readings of the points it serves: on to the next request.
    Read(Vec<Reading>),
    /// An answer that is an error (an exception, a bad value): the error is
    /// the cycle's, and on to the next request.
    Failed(String),
    /// The device refused a merged read and it was planned again: the
    /// request now at the cursor goes next.
    Replanned,
    /// The device is busy: the same request again after `busy_delay`.
    Busy,
    /// No answer, or a garbled one, within the retries: the same request
    /// again as soon as the link is free.
    Retry,
    /// No answer after the retries: the device is offline.
    Offline(String),
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);

/// How often one request is asked again, `busy_delay` apart, while the
/// device answers exception 06 (busy) before the read counts as failed.
pub(super) const BUSY_RETRIES: u32 = 5;

/// The "poll" of a broadcast device (unit 0): it is never read, so its
/// cycle only refreshes its status.
const BROADCAST_IDLE: Duration = Duration::from_secs(24 * 3600);

/// One point at run time.
#[derive(Debug, Clone)]
pub(super) struct PointRt {
    pub name: Arc<str>,
    pub unit: Option<Arc<str>>,
    pub codec: Codec,
    pub writable: bool,
    /// 0-based protocol address.
    pub start: u16,
}

/// One device's poll state.
pub(super) struct Poller {
    pub name: Arc<str>,
    /// The device's readings counter and last values, kept between polls.
    feed: DeviceFeed,
    pub unit: u8,
    /// Unit 0 on a bus: written to all units at once, never read.
    pub broadcast: bool,
    pub poll: Duration,
    pub timeout: Duration,
    pub retries: u32,
    backoff_max: Duration,
    pub busy_delay: Duration,
    pub bit_write: super::BitWrite,
    /// Busy answers (exception 06) to the request at `cursor` so far.
    busy: u32,
    pub write_multiple: bool,
    pub points: Vec<PointRt>,
    /// Shared, so taking the one at the cursor copies no spans.
    requests: Vec<Arc<ReadRequest>>,
    cursor: usize,
    attempt: u32,
    cycle_due: Instant,
    cycle_errors: Vec<String>,
    /// The current cycle's start, requests and failed requests.
    cycle: CycleCount,
    /// Every point's place, the configured limits and what the device
    /// taught (`learn.rs`): the merge of `requests`.
    spans: Vec<Span>,
    limits: Limits,
    learned: Learned,
    data_dir: Option<Arc<Path>>,
    /// Whether the device answered its last request.
    pub online: bool,
    failures: u32,
    /// When this device wants the link next.
    pub next_due: Instant,
    last_status: Option<(bool, Option<String>)>,
}

impl Poller {
    pub fn new(name: &str, common: &Common) -> Self {
        Self::make(name, common, false)
    }

    /// A unit of an RTU bus, where unit 0 is the broadcast address: such a
    /// device is never read, and its writes are never answered.
    pub fn on_bus(name: &str, common: &Common) -> Self {
        Self::make(name, common, common.unit == 0)
    }

    fn make(name: &str, common: &Common, broadcast: bool) -> Self {
        let points = common
            .points
            .iter()
            .map(|p| PointRt {
                name: p.name.as_str().into(),
                unit: p.unit.as_deref().map(Arc::from),
                codec: p.codec(),
                writable: p.writable,
                start: common.protocol_address(p),
            })
            .collect();
        let now = Instant::now();
        let name: Arc<str> = name.into();
        Poller {
            broadcast,
            feed: DeviceFeed::new(&name),
            name,
            unit: common.unit,
            poll: if broadcast {
                BROADCAST_IDLE
            } else {
                common.poll.get()
            },
            timeout: common.timeout.get(),
            retries: common.retries,
            backoff_max: common.backoff_max.get(),
            busy_delay: common.busy_delay.get(),
            bit_write: common.bit_write,
            busy: 0,
            write_multiple: common.write_multiple,
            points,
            requests: if broadcast {
                Vec::new()
            } else {
                common.read_requests().into_iter().map(Arc::new).collect()
            },
            cursor: 0,
            attempt: 0,
            cycle_due: now,
            cycle_errors: Vec::new(),
            cycle: CycleCount::started(),
            learned: Learned {
                fingerprint: learn::fingerprint(common.unit, &common.spans()),
                ..Learned::default()
            },
            spans: common.spans(),
            limits: common.limits(),
            data_dir: None,
            online: true,
            failures: 0,
            next_due: now,
            last_status: None,
        }
    }

    /// The wait before the next probe of a device that failed `failures`
    /// times in a row: doubling from max(poll, 500ms) up to `backoff_max`,
    /// then a random cut of up to half ("equal jitter"), so devices that
    /// died together do not probe in lockstep.
    fn backoff(&self) -> Duration {
        let base = self.poll.max(BACKOFF_MIN);
        let exp = self.failures.saturating_sub(1).min(20);
        let d = base.saturating_mul(1 << exp).min(self.backoff_max);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Runs requests from where the device left off until its cycle ends or
    /// a request needs to wait (retry, backoff). Sets `next_due`. Returns
    /// `false` when the pipeline has closed.
    pub async fn step<L: Link>(&mut self, link: &mut L, ctx: &SourceContext) -> bool {
        if self.cursor == 0 && self.attempt == 0 && self.busy == 0 {
            self.cycle_errors.clear();
            self.cycle_due = self.next_due;
            self.cycle = CycleCount::started();
        }
        while let Some(req) = self.requests.get(self.cursor).cloned() {
            let r = link.call(self.unit, req.to_request(), self.timeout).await;
            self.cycle.requests += 1;
            self.cycle.errors += u32::from(r.is_err());
            count(&self.name, &r);
            let r = r.and_then(|resp| self.decode(&req, resp));
            match self.judge(link, &req, r).await {
                Outcome::Read(readings) => {
                    self.answered();
                    // one batch per reply: one send, in point order
                    if !ctx.send_all(&self.feed, readings).await {
                        return false;
                    }
                }
                Outcome::Failed(error) => {
                    self.answered();
                    self.cycle_errors.push(error);
                }
                Outcome::Replanned => {
                    self.online = true;
                    self.attempt = 0;
                }
                Outcome::Busy => {
                    self.online = true;
                    self.busy += 1;
                    self.next_due = Instant::now() + self.busy_delay;
                    return true;
                }
                Outcome::Retry => {
                    self.attempt += 1;
                    // yield the link: a bus serves other devices first
                    self.next_due = Instant::now();
                    return true;
                }
                Outcome::Offline(error) => return self.offline(error, ctx).await,
            }
        }
        self.cycle_complete(ctx).await
    }

    /// What the answer `r` to `req` means for the cycle. A merged read the
    /// device refuses is planned again here (learned limits, or one read
    /// per point).
    async fn judge<L: Link>(
        &mut self,
        link: &mut L,
        req: &ReadRequest,
        r: Result<Vec<Reading>, CallError>,
    ) -> Outcome {
        match r {
            Ok(readings) => Outcome::Read(readings),
            Err(CallError::Exception(
                ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue,
            )) if req.spans.len() > 1 && self.learn_from(link, req).await => Outcome::Replanned,
            Err(CallError::Exception(ExceptionCode::IllegalDataAddress)) if req.spans.len() > 1 => {
                let parts = req.split();
                info!(
                    device = %self.name, unit = self.unit, request = %req, parts = parts.len(),
                    "device refused a merged read (IllegalDataAddress): reading its points one by one"
                );
                self.requests
                    .splice(self.cursor..=self.cursor, parts.into_iter().map(Arc::new));
                Outcome::Replanned
            }
            Err(CallError::Exception(ExceptionCode::ServerDeviceBusy))
                if self.busy < BUSY_RETRIES =>
            {
                // busy is an answer: ask again later, not an error
                debug!(device = %self.name, unit = self.unit, request = %req, busy = self.busy + 1, "device busy; asking again");
                Outcome::Busy
            }
            Err(e) if e.is_no_answer() => {
                if self.online && self.attempt < self.retries {
                    debug!(device = %self.name, unit = self.unit, request = %req, error = %e, attempt = self.attempt + 1, "retrying");
                    return Outcome::Retry;
                }
                Outcome::Offline(format!("{req} (unit {}): {e}", self.unit))
            }
            Err(e) => {
                let retry = matches!(e, CallError::BadReply(_) | CallError::Garbled { .. });
                if retry && self.attempt < self.retries {
                    return Outcome::Retry;
                }
                debug!(device = %self.name, unit = self.unit, request = %req, error = %e, "read failed");
                Outcome::Failed(format!("{req} (unit {}): {e}", self.unit))
            }
        }
    }

    /// The device answered the request at the cursor: on to the next one.
    fn answered(&mut self) {
        self.online = true;
        self.attempt = 0;
        self.busy = 0;
        self.cursor += 1;
    }

    /// No answer after the retries: the device is offline until a probe
    /// after the backoff answers; the cycle starts over.
    async fn offline(&mut self, error: String, ctx: &SourceContext) -> bool {
        if self.online {
            warn!(device = %self.name, unit = self.unit, error = %error, "device offline");
        }
        self.online = false;
        self.failures = self.failures.saturating_add(1);
        self.attempt = 0;
        self.busy = 0;
        self.cursor = 0;
        self.next_due = Instant::now() + self.backoff();
        self.status(false, Some(error), ctx).await
    }

    /// Every request of the cycle was answered: its time and errors go to
    /// the status page's hour, the next cycle is due one poll after this
    /// one was, and the status says online with the cycle's errors.
    async fn cycle_complete(&mut self, ctx: &SourceContext) -> bool {
        crate::recent::mark_poll(
            &self.name,
            self.cycle
                .started
                .elapsed()
                .as_millis()
                .min(u32::MAX as u128) as u32,
            self.cycle.requests,
            self.cycle.errors,
        );
        if self.failures > 0 {
            info!(device = %self.name, unit = self.unit, "device answers again");
        }
        self.failures = 0;
        self.cursor = 0;
        let now = Instant::now();
        let next = self.cycle_due + self.poll;
        self.next_due = if next < now { now } else { next };
        let error = (!self.cycle_errors.is_empty()).then(|| self.cycle_errors.join("; "));
        self.status(true, error, ctx).await
    }

    /// Publishes the device status when it changed.
    async fn status(&mut self, online: bool, error: Option<String>, ctx: &SourceContext) -> bool {
        let now = (online, error);
        if self.last_status.as_ref() == Some(&now) {
            return true;
        }
        let ok = ctx.set_status(&self.name, now.0, now.1.as_deref()).await;
        self.last_status = Some(now);
        ok
    }

    /// Publishes `offline` on shutdown.
    pub async fn stopped(&mut self, ctx: &SourceContext) {
        self.status(false, Some("gateway stopped".into()), ctx)
            .await;
    }

    /// The readings of the points a reply serves, in request order,
    /// stamped now.
    fn decode(&self, req: &ReadRequest, resp: Response) -> Result<Vec<Reading>, CallError> {
        let mut out = Vec::with_capacity(req.spans.len());
        let ts = now_ms();
        let reading = |i: usize, value: Value| {
            let p = &self.points[i];
            Reading::good(&self.name, &p.name, value, &p.unit, ts)
        };
        if req.table.is_bits() {
            let bits = link::bits(resp, req.count)?;
            for s in &req.spans {
                let b = bits[usize::from(s.start - req.start)];
                out.push(reading(s.point, self.points[s.point].codec.decode_bit(b)));
            }
        } else {
            let words = link::registers(resp, req.count)?;
            for s in &req.spans {
                let at = usize::from(s.start - req.start);
                let slice = &words[at..at + usize::from(s.count)];
                let v = self.points[s.point]
                    .codec
                    .decode_words(slice)
                    .map_err(|e| {
                        CallError::BadReply(format!("point {}: {e}", self.points[s.point].name))
                    })?;
                out.push(reading(s.point, v));
            }
        }
        Ok(out)
    }

    /// Reads one point now (after a write) and hands the value on.
    pub async fn read_back<L: Link>(
        &mut self,
        link: &mut L,
        point: usize,
        ctx: &SourceContext,
    ) -> Result<(), CallError> {
        let p = &self.points[point];
        let req = ReadRequest {
            table: p.codec.table,
            start: p.start,
            count: p.codec.length,
            spans: vec![super::merge::Span {
                point,
                table: p.codec.table,
                start: p.start,
                count: p.codec.length,
            }],
        };
        let resp = link.call(self.unit, req.to_request(), self.timeout).await;
        count(&self.name, &resp);
        let resp = resp?;
        let readings = self.decode(&req, resp)?;
        ctx.send_all(&self.feed, readings).await;
        Ok(())
    }
}

/// Records one request in the Modbus metrics (requests, errors, timeouts
/// per device).
pub(super) fn count(device: &str, r: &Result<Response, CallError>) {
    let m = crate::southbound::metrics::get();
    let l = crate::southbound::metrics::device(device);
    m.modbus_requests.get_or_create(&l).inc();
    match r {
        Ok(_) => {}
        Err(CallError::Timeout(_)) => {
            m.modbus_timeouts.get_or_create(&l).inc();
        }
        Err(_) => {
            m.modbus_errors.get_or_create(&l).inc();
        }
    }
}

mod learning;

#[cfg(test)]
mod tests {
    use super::*;

    fn poller(yaml: &str) -> Poller {
        let cfg: super::super::ModbusTcpConfig = serde_yaml_ng::from_str(yaml).expect("yaml");
        Poller::new(&cfg.name, &cfg.common())
    }

    #[test]
    fn backoff_doubles_from_poll_up_to_the_cap_with_jitter() {
        let mut p = poller("{name: d, address: 'h:502', poll: 2s, backoff_max: 10s}");
        let mut lows = Vec::new();
        for failures in 1..=6 {
            p.failures = failures;
            let full = Duration::from_secs(2)
                .saturating_mul(1 << (failures - 1))
                .min(Duration::from_secs(10));
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff()).collect();
            assert!(
                waits.iter().all(|w| *w >= full / 2 && *w <= full),
                "{failures}: {waits:?}"
            );
            lows.push(*waits.iter().min().expect("waits"));
            // jitter: not all the same
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "{failures}: no jitter"
            );
        }
        assert!(
            lows[4] >= Duration::from_secs(5),
            "capped at backoff_max: {lows:?}"
        );
    }

    #[test]
    fn backoff_starts_at_half_a_second_for_fast_polls() {
        let mut p = poller("{name: d, address: 'h:502', poll: 50ms}");
        p.failures = 1;
        let w = p.backoff();
        assert!(
            w >= Duration::from_millis(250) && w <= Duration::from_millis(500),
            "{w:?}"
        );
    }
}
