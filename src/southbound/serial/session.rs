//! The running side of a serial device: open the port, read, frame, decode,
//! send readings; write requests on their timer; when the port vanishes
//! (USB unplugged), report the device offline and reopen with backoff.
//! SIGHUP recompiles the decoder script; one that fails to compile is
//! logged and the old one kept.
//!
//! Owns the port and the reconnect loop. Drop policy: a frame the decoder
//! fails on gives no readings (logged with the script position and the
//! escaped frame, counted in `decode_errors`); oversized frames are counted
//! by the framer. Readings are never dropped here: a full channel makes the
//! session wait (the kernel buffers the port meanwhile). A decoder call is
//! bounded by the script limits, so it runs inline.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until};
use tokio_serial::SerialPortBuilderExt;
use tracing::{debug, error, info, warn};

use super::decoder::Decoder;
use super::framing::{FrameStats, Framer, escape_for_log, unescape};
use super::{FlowControl, SerialConfig, SerialStats};
use crate::log_throttle::LogThrottle;
use crate::reading::{Quality, Reading, now_ms};
use crate::southbound::SourceContext;

/// How many bytes of a frame a log line shows.
const LOG_FRAME_BYTES: usize = 64;
/// Bytes read from the port at once (the framer's buffer is bounded by
/// `max_frame` plus this).
const READ_CHUNK: usize = 1024;
/// How long a request write may take before the port counts as gone.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// At most one warning per second for a problem that repeats with every
/// frame (a wrong baud rate makes every frame fail); the others are counted
/// and reported with the next warning. The counters in [`SerialStats`]
/// count every one.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a session with an open port ended.
#[derive(Debug)]
pub(super) enum Ended {
    Cancelled,
    PipelineClosed,
    Lost(String),
}

fn open(cfg: &SerialConfig) -> tokio_serial::Result<tokio_serial::SerialStream> {
    let data_bits = match cfg.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity: tokio_serial::Parity = cfg.parity.into();
    let stop_bits = match cfg.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow = match cfg.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    tokio_serial::new(cfg.port.to_string_lossy(), cfg.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow)
        .open_native_async()
}

/// A SIGHUP listener; `None` (and a warning) when there cannot be one.
fn hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for SIGHUP, the decoder will not reload: {e}");
            None
        }
    }
}

/// The next SIGHUP; never, without a listener.
async fn next_hangup(hup: &mut Option<Signal>) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Recompiles the decoder script (SIGHUP); keeps the old one on failure.
fn reload(cfg: &SerialConfig, decoder: &mut Decoder) {
    if cfg.decoder == "json" {
        return;
    }
    match cfg.build_decoder() {
        Ok(d) => {
            *decoder = d;
            info!(decoder = decoder.name(), "SIGHUP: decoder reloaded");
        }
        Err(e) => error!(error = %e, "SIGHUP: decoder not reloaded, keeping the old one"),
    }
}

/// The device's life: build the decoder, then open / read / reopen until
/// cancelled.
pub(super) async fn run(cfg: SerialConfig, stats: Arc<SerialStats>, ctx: SourceContext) {
    let device: Arc<str> = cfg.name.as_str().into();
    let mut decoder = match cfg.build_decoder() {
        Ok(d) => d,
        Err(e) => {
            // Config loading compiled it a moment ago: the file changed since.
            error!(error = %e, "cannot load the decoder; the device stays offline");
            let msg = format!("decoder: {e}");
            ctx.set_status(&device, false, Some(&msg)).await;
            return;
        }
    };
    let min = cfg.reconnect.min.get();
    let max = cfg.reconnect.max.get();
    let mut backoff = min;
    let mut last_error: Option<String> = None;
    let mut hup = hangups();
    loop {
        if ctx.cancel.is_cancelled() {
            break;
        }
        match open(&cfg) {
            Ok(port) => {
                stats.opens.fetch_add(1, Ordering::Relaxed);
                info!(baud = cfg.baud, "serial port open");
                if !ctx.set_status(&device, true, None).await {
                    return;
                }
                backoff = min;
                let ended = session(&cfg, port, &mut decoder, &stats, &ctx, &device, &mut hup);
                match ended.await {
                    Ended::Cancelled => break,
                    Ended::PipelineClosed => return,
                    Ended::Lost(why) => {
                        warn!(error = %why, "serial port lost; reopening with backoff");
                        if !ctx.set_status(&device, false, Some(&why)).await {
                            return;
                        }
                        last_error = Some(why);
                    }
                }
            }
            Err(e) => {
                stats.open_failures.fetch_add(1, Ordering::Relaxed);
                let why = format!("cannot open {}: {}", cfg.port.display(), e.description);
                if last_error.as_deref() != Some(why.as_str()) {
                    warn!(error = %why, retry_in = ?backoff, "serial port unavailable");
                    if !ctx.set_status(&device, false, Some(&why)).await {
                        return;
                    }
                    last_error = Some(why);
                } else {
                    debug!(error = %why, retry_in = ?backoff, "serial port still unavailable");
                }
            }
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = sleep(backoff) => {}
            () = next_hangup(&mut hup) => reload(&cfg, &mut decoder),
        }
        backoff = (backoff * 2).min(max);
    }
    ctx.set_status(&device, false, Some("gateway stopped"))
        .await;
}

/// One connection: read, frame, decode and send until the port fails or the
/// gateway stops.
pub(super) async fn session<S>(
    cfg: &SerialConfig,
    port: S,
    decoder: &mut Decoder,
    stats: &SerialStats,
    ctx: &SourceContext,
    device: &Arc<str>,
    hup: &mut Option<Signal>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mode, idle) = match cfg.frame.mode() {
        Ok(m) => m,
        Err(e) => return Ended::Lost(format!("frame: {e}")),
    };
    let max_frame = usize::try_from(cfg.max_frame.0).unwrap_or(usize::MAX);
    let mut framer = Framer::new(mode, max_frame);
    let mut seen = FrameStats::default();
    let (mut rx, mut tx) = tokio::io::split(port);
    let mut request = match &cfg.request {
        Some(r) => {
            let data = unescape(&r.data).unwrap_or_else(|_| r.data.clone().into_bytes());
            let mut t = interval(r.every.get());
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some((data, t))
        }
        None => None,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut idle_at: Option<Instant> = None;
    let mut oversized_log = LogThrottle::new(WARN_EVERY);
    let mut error_log = LogThrottle::new(WARN_EVERY);
    loop {
        let idle_wait = async {
            match idle_at {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let request_due = async {
            match &mut request {
                Some((_, t)) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ended::Cancelled,
            r = rx.read(&mut buf) => match r {
                Ok(0) => return Ended::Lost("the port was closed (end of file)".into()),
                Ok(n) => {
                    framer.push(&buf[..n], &mut frames);
                    if let Some(idle) = idle {
                        idle_at = Some(Instant::now() + idle);
                    }
                }
                Err(e) => return Ended::Lost(format!("read failed: {e}")),
            },
            () = next_hangup(hup) => reload(cfg, decoder),
            _ = idle_wait => {
                idle_at = None;
                frames.extend(framer.idle());
            }
            _ = request_due => {
                let data = request.as_ref().map(|(d, _)| d.as_slice()).unwrap_or_default();
                match tokio::time::timeout(WRITE_TIMEOUT, tx.write_all(data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("request write failed: {e}")),
                    Err(_) => return Ended::Lost("request write timed out".into()),
                }
            }
        }
        let now = framer.stats();
        account(device, stats, &seen, &now, max_frame, &mut oversized_log);
        seen = now;
        for frame in frames.drain(..) {
            if !deliver(decoder, &frame, stats, ctx, device, &mut error_log).await {
                return Ended::PipelineClosed;
            }
        }
    }
}

/// Moves the framer's counts into the shared counters; logs new oversized frames.
fn account(
    device: &str,
    stats: &SerialStats,
    before: &FrameStats,
    now: &FrameStats,
    max_frame: usize,
    throttle: &mut LogThrottle,
) {
    stats
        .frames
        .fetch_add(now.frames - before.frames, Ordering::Relaxed);
    let discarded = now.discarded_bytes - before.discarded_bytes;
    stats
        .discarded_bytes
        .fetch_add(discarded, Ordering::Relaxed);
    if discarded > 0 {
        crate::southbound::metrics::get()
            .serial_discarded_bytes
            .get_or_create(&crate::southbound::metrics::device(device))
            .inc_by(discarded);
    }
    let oversized = now.oversized - before.oversized;
    if oversized > 0 {
        let total = stats
            .oversized_frames
            .fetch_add(oversized, Ordering::Relaxed)
            + oversized;
        let Some(suppressed) = throttle.ready() else {
            return;
        };
        warn!(
            max_frame,
            oversized_total = total,
            suppressed,
            "frame longer than max_frame discarded (no delimiter? wrong baud rate?)"
        );
    }
}

/// Decodes one frame and sends its readings. `false` when the pipeline closed.
async fn deliver(
    decoder: &mut Decoder,
    frame: &[u8],
    stats: &SerialStats,
    ctx: &SourceContext,
    device: &Arc<str>,
    throttle: &mut LogThrottle,
) -> bool {
    let ts = now_ms();
    let decoded = match decoder.decode(frame) {
        Ok(d) => d,
        Err(e) => {
            let total = stats.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
            crate::southbound::metrics::get()
                .decode_errors
                .get_or_create(&crate::southbound::metrics::device(device))
                .inc();
            let Some(suppressed) = throttle.ready() else {
                debug!(error = %e, "decoder error (warning throttled)");
                return true;
            };
            warn!(
                suppressed,
                decoder = decoder.name(),
                error = %e,
                frame = %escape_for_log(frame, LOG_FRAME_BYTES),
                decode_errors = total,
                "decoder error; frame skipped"
            );
            return true;
        }
    };
    for d in decoded {
        let reading = Reading {
            device: device.clone(),
            point: d.point,
            value: d.value,
            unit: d.unit,
            ts,
            quality: Quality::Good,
        };
        if !ctx.send(reading).await {
            debug!("pipeline closed; stopping");
            return false;
        }
        stats.readings.fetch_add(1, Ordering::Relaxed);
    }
    true
}
