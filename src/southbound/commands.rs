//! Device commands: the one entry point for writes is a publish on the local
//! broker to `{gateway}/{device}/{point}/set` (local clients, and later the
//! bridge mapping upstream command topics onto the same local topics).
//!
//! Owns the command task (an in-process broker link subscribed to
//! `{gateway}/+/+/set`), the routes from device names to the sources that
//! own them, each writable point's write guard (`min` / `max`,
//! `max_write_rate`: [`super::guard`]), payload parsing, and the
//! `.../set/result` message (the topics are `reading::command`'s). Must not talk to devices: it hands each
//! command to its source's bounded queue.
//!
//! Drop policy: a command for a source whose queue is full is refused at
//! once with `{"ok": false, "error": "device ... busy ..."}` and counted in
//! [`Stats::refused_busy`]; commands are never queued without bound. A
//! write the guard refuses (outside `min` / `max`, or past the point's
//! rate) never reaches the queue: it is answered at once and counted in
//! `fieldgate_writes_refused_total{device, point, reason}`, its log line
//! throttled. Only writes handed to the queue count against the rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::guard::{PointGuard, WriteLimits};
use crate::log_throttle::LogThrottle;
use crate::reading::{Publish, Qos, Value, command};

/// Commands a source may have waiting before new ones are refused.
pub const QUEUE_CAPACITY: usize = 16;

/// One `.../set` publish, routed to the source that owns `device`.
#[derive(Debug, Clone)]
pub struct WriteCommand {
    pub device: String,
    pub point: String,
    pub payload: Bytes,
}

/// Counters of the command path.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub routed: AtomicU64,
    /// Refused because the owning source's queue was full.
    pub refused_busy: AtomicU64,
    /// Refused because no source accepts writes for the device.
    pub refused_unroutable: AtomicU64,
}

/// Device name -> the command queue of the source that owns it, and
/// device -> point -> the guard of each writable point.
#[derive(Default)]
pub struct Routes {
    map: HashMap<String, mpsc::Sender<WriteCommand>>,
    guards: HashMap<String, HashMap<String, PointGuard>>,
    pub stats: Arc<Stats>,
}

impl Routes {
    pub fn new() -> Self {
        Routes::default()
    }

    /// A new queue for a source; register its devices with [`Routes::add`].
    pub fn queue() -> (mpsc::Sender<WriteCommand>, mpsc::Receiver<WriteCommand>) {
        mpsc::channel(QUEUE_CAPACITY)
    }

    pub fn add(&mut self, device: &str, tx: mpsc::Sender<WriteCommand>) {
        self.map.insert(device.to_string(), tx);
    }

    /// One queue for a source that serves several devices (a bus): each
    /// device's commands are routed to it.
    pub fn queue_for<'a>(
        &mut self,
        devices: impl IntoIterator<Item = &'a str>,
    ) -> mpsc::Receiver<WriteCommand> {
        let (tx, rx) = Self::queue();
        for d in devices {
            self.add(d, tx.clone());
        }
        rx
    }

    /// Guards the writes to `device`'s `point` with `limits`.
    pub fn guard(&mut self, device: &str, point: &str, limits: WriteLimits) {
        self.guards
            .entry(device.to_string())
            .or_default()
            .insert(point.to_string(), PointGuard::new(limits));
    }

    /// Routes one command: the guard's check, then its source's queue.
    /// `Err` is the refusal for `.../set/result`.
    fn route(&mut self, cmd: &WriteCommand, log: &mut LogThrottle) -> Result<(), String> {
        let (device, point) = (cmd.device.as_str(), cmd.point.as_str());
        let Some(q) = self.map.get(device) else {
            self.stats
                .refused_unroutable
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "device {device:?} does not exist or does not accept writes"
            ));
        };
        let now = Instant::now();
        let mut guard = self.guards.get_mut(device).and_then(|g| g.get_mut(point));
        if let Some(g) = guard.as_deref_mut() {
            guarded(g, cmd, now, log)?;
        }
        match q.try_send(cmd.clone()) {
            Ok(()) => {
                self.stats.routed.fetch_add(1, Ordering::Relaxed);
                if let Some(g) = guard {
                    g.record(now);
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                warn!(device, point, "command queue full; write refused");
                Err(format!(
                    "device {device} busy: {QUEUE_CAPACITY} writes already waiting; nothing was written"
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(format!("device {device} is stopping; nothing was written"))
            }
        }
    }
}

/// The guard's check of `cmd` at `now`; a refusal is counted in
/// `fieldgate_writes_refused_total` and logged (throttled by `log`).
fn guarded(
    g: &mut PointGuard,
    cmd: &WriteCommand,
    now: Instant,
    log: &mut LogThrottle,
) -> Result<(), String> {
    let (device, point) = (cmd.device.as_str(), cmd.point.as_str());
    let value = parse_value(&cmd.payload).ok();
    let Err(refusal) = g.check(point, value.as_ref(), now) else {
        return Ok(());
    };
    let labels = vec![
        ("device".to_string(), device.to_string()),
        ("point".to_string(), point.to_string()),
        ("reason".to_string(), refusal.reason().to_string()),
    ];
    super::metrics::get()
        .writes_refused
        .get_or_create(&labels)
        .inc();
    if let Some(held) = log.ready() {
        warn!(device, point, error = %refusal, held_back = held, "write refused by its guard");
    }
    Err(refusal.to_string())
}

/// The `{gateway}/+/+/set` filter the command task subscribes to.
pub fn filter(gateway: &str) -> String {
    command::set_topic(gateway, "+", "+")
}

/// The value of a command payload: JSON `21.5`, `true`, `"auto"`, or
/// `{"value": ...}`. A payload that is not JSON at all is taken as a string.
pub fn parse_value(payload: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_string())?;
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(j) => j,
        Err(_) if !text.trim().is_empty() => return Ok(Value::String(text.to_string())),
        Err(_) => return Err("the payload is empty".into()),
    };
    let json = match json {
        serde_json::Value::Object(mut m) => match m.remove("value") {
            Some(v) if m.is_empty() => v,
            Some(_) => return Err("an object payload may only hold \"value\"".into()),
            None => return Err("an object payload needs \"value\"".into()),
        },
        other => other,
    };
    match json {
        serde_json::Value::Bool(b) => Ok(Value::Bool(b)),
        serde_json::Value::String(s) => Ok(Value::String(s)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Value::Int(i)),
            None => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| format!("{n} is not a usable number")),
        },
        other => Err(format!("expected a number, bool or string, got {other}")),
    }
}

/// The `{gateway}/{device}/{point}/set/result` message.
pub fn result(gateway: &str, device: &str, point: &str, r: &Result<(), String>) -> Publish {
    let body = match r {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    Publish {
        topic: command::result_topic(gateway, device, point),
        payload: Bytes::from(body.to_string()),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

/// Routes every command from `commands` (the broker's in-process
/// subscription to [`filter`]) until `cancel` fires. Replies to commands
/// it cannot route go to `publishes`.
pub async fn run(
    gateway: Arc<str>,
    mut commands: mpsc::Receiver<crate::broker::Message>,
    mut routes: Routes,
    publishes: mpsc::Sender<Publish>,
    cancel: CancellationToken,
) {
    let mut refusal_log = LogThrottle::new(Duration::from_secs(10));
    loop {
        let p = tokio::select! {
            _ = cancel.cancelled() => break,
            n = commands.recv() => match n {
                Some(p) => p,
                None => {
                    error!("command subscription closed; writes stop");
                    break;
                }
            },
        };
        let topic = p.topic.to_string();
        routes.stats.received.fetch_add(1, Ordering::Relaxed);
        let Some((device, point)) = command::parse_set_topic(&gateway, &topic) else {
            continue;
        };
        let cmd = WriteCommand {
            device: device.to_string(),
            point: point.to_string(),
            payload: p.payload.clone(),
        };
        debug!(device, point, "write command");
        if let Err(e) = routes.route(&cmd, &mut refusal_log) {
            let reply = result(&gateway, &cmd.device, &cmd.point, &Err(e));
            if publishes.send(reply).await.is_err() {
                break;
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_value(b"21.5"), Ok(Value::Float(21.5)));
        assert_eq!(parse_value(b"-3"), Ok(Value::Int(-3)));
        assert_eq!(parse_value(b"true"), Ok(Value::Bool(true)));
        assert_eq!(parse_value(br#""auto""#), Ok(Value::String("auto".into())));
        assert_eq!(parse_value(br#"{"value": 7}"#), Ok(Value::Int(7)));
        assert_eq!(parse_value(b"auto"), Ok(Value::String("auto".into())));
        assert!(parse_value(br#"{"v": 7}"#).is_err());
        assert!(parse_value(b"[1,2]").is_err());
        assert!(parse_value(b"null").is_err());
        assert!(parse_value(b"").is_err());
    }
}
