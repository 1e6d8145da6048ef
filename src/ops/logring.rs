//! The last [`CAPACITY`] log events at WARN or above, for the status page:
//! a tracing layer that keeps them in a bounded ring buffer.
//!
//! Owns the ring. Drop policy: when it is full the oldest event goes (the
//! page shows recent warnings; the full log is on stderr / the journal).
//! Must not format or write the log itself.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many events the ring keeps.
pub const CAPACITY: usize = 50;

/// One kept log event.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub level: &'static str,
    pub target: String,
    /// The message, then the other fields as `key=value`.
    pub message: String,
}

static RING: LazyLock<Mutex<VecDeque<LogEvent>>> =
    LazyLock::new(|| Mutex::new(VecDeque::with_capacity(CAPACITY)));

/// The layer to add to the subscriber.
pub struct RingLayer;

/// A layer that keeps WARN and ERROR events.
pub fn layer() -> RingLayer {
    RingLayer
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        push(LogEvent {
            ts: crate::reading::now_ms(),
            level: if level == Level::ERROR {
                "ERROR"
            } else {
                "WARN"
            },
            target: meta.target().to_string(),
            message: format!("{}{}", text.message, text.fields),
        });
    }
}

fn push(e: LogEvent) {
    if let Ok(mut ring) = RING.lock() {
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(e);
    }
}

/// The kept events, newest first.
pub fn recent() -> Vec<LogEvent> {
    RING.lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_warnings_only() {
        let sub = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(sub, || {
            tracing::info!("not kept");
            for i in 0..(CAPACITY + 5) {
                tracing::warn!(n = i, "warning");
            }
            tracing::error!(device = "boiler", "poll failed");
        });
        let r = recent();
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r[0].level, "ERROR");
        assert_eq!(r[0].message, "poll failed device=boiler");
        assert!(r.iter().all(|e| !e.message.contains("not kept")));
        assert_eq!(r[1].message, format!("warning n={}", CAPACITY + 4));
    }
}
