//! `$SYS/broker/...`: the broker's figures under mosquitto's topic names,
//! retained, refreshed every `broker.sys_interval` (zero: off).
//!
//! Topics: version, uptime, time, clients/connected|disconnected|maximum|
//! total, messages/received|sent (packets), messages/publish/received|
//! sent|dropped, messages/retained/count, subscriptions/count, and
//! fieldgate's messages/expired and clients/mqtt5,
//! bytes/received|sent (totals) and load/bytes/received|sent (bytes per
//! minute over the last interval); fieldgate's own limits/<limit> (the
//! times each broker limit was hit, named by its config key). Owns nothing but its task; must not
//! touch sessions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::message::Message;
use super::router::Router;
use super::stats::Snapshot;

fn figures(s: &Snapshot, last: &Snapshot, per: Duration) -> Vec<(&'static str, String)> {
    let per_min = |now: u64, before: u64| {
        let secs = per.as_secs_f64().max(0.001);
        format!("{:.0}", now.saturating_sub(before) as f64 * 60.0 / secs)
    };
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    vec![
        (
            "version",
            format!("fieldgate {}", env!("CARGO_PKG_VERSION")),
        ),
        ("uptime", format!("{} seconds", s.uptime_secs)),
        ("time", time),
        ("clients/connected", s.clients_connected.to_string()),
        ("clients/disconnected", s.clients_disconnected.to_string()),
        ("clients/maximum", s.clients_maximum.to_string()),
        (
            "clients/total",
            (s.clients_connected + s.clients_disconnected).to_string(),
        ),
        ("messages/received", s.messages_received.to_string()),
        ("messages/sent", s.messages_sent.to_string()),
        ("messages/publish/received", s.publish_received.to_string()),
        ("messages/publish/sent", s.publish_sent.to_string()),
        ("messages/publish/dropped", s.publish_dropped.to_string()),
        ("messages/retained/count", s.retained.to_string()),
        ("messages/expired", s.messages_expired.to_string()),
        (
            "messages/shared_redelivered",
            s.shared_redelivered.to_string(),
        ),
        ("clients/mqtt5", s.clients_v5.to_string()),
        ("subscriptions/count", s.subscriptions.to_string()),
        ("bytes/received", s.bytes_received.to_string()),
        ("bytes/sent", s.bytes_sent.to_string()),
        (
            "load/bytes/received",
            per_min(s.bytes_received, last.bytes_received),
        ),
        ("load/bytes/sent", per_min(s.bytes_sent, last.bytes_sent)),
    ]
}

/// Publishes the figures at once and then every `interval` until `cancel`.
pub async fn run(router: Arc<Router>, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    let mut last = router.stats.snapshot();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = router.stats.snapshot();
        let mut all = figures(&now, &last, interval);
        for (name, hits) in router.stats.limits.all() {
            all.push((name, hits.to_string()));
        }
        let limits = all.len() - router.stats.limits.all().len();
        for (i, (name, value)) in all.into_iter().enumerate() {
            let topic: Arc<str> = match i >= limits {
                true => format!("$SYS/broker/limits/{name}").into(),
                false => format!("$SYS/broker/{name}").into(),
            };
            router
                .publish(Message::new(topic, Bytes::from(value), 0, true))
                .await;
        }
        last = now;
    }
}
