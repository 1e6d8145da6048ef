//! fieldgate: an IoT gateway that reads field devices, maps readings to MQTT
//! through rules, publishes them on an embedded broker and forwards them
//! upstream.
//!
//! Module map (see docs/design.md):
//! - [`settings`]: the whole `Config` (every stage's section), loading and the checks across sections;
//! - [`config`]: the config leaf: value types, problems with YAML paths and lines;
//! - [`reading`]: `Reading`, `Value`, `Quality`, `Publish`, the types between stages;
//! - [`southbound`]: one source per device kind (`simulated`, `modbus-tcp`, one per RTU bus), and the `.../set` command path;
//! - [`rules`]: readings to publishes (Rhai scripts or the default mapping);
//! - [`script`]: the sandboxed Rhai engine shared by rules and decoders;
//! - [`broker`]: fieldgate's own MQTT broker and its in-process API;
//! - [`bridge`]: the store-and-forward uplink (SQLite outbox, rumqttc);
//! - [`metrics`]: the metrics leaf: registry, collectors stages register, the log throttle;
//! - [`ops`]: status topics, HTTP (metrics, health, status page, JSON API), Home Assistant discovery, systemd;
//! - [`plan`]: what `fieldgate check` prints.
//!
//! [`run`] wires the stages together and owns the shutdown order: sources
//! stop first, the rules stage drains what they sent, the gateway status
//! turns `offline`, the bridge commits what it was given and flushes the
//! outbox upstream within a deadline, the publisher drains, and the
//! broker closes its clients and commits its store last.

pub mod bridge;
pub mod broker;
pub mod config;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod reading;
pub mod rules;
pub mod script;
pub mod settings;
pub mod southbound;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::broker::{Broker, BrokerError};
use crate::reading::{Publish, Reading};
use crate::settings::Config;
use crate::southbound::SourceContext;

/// Capacity of the sources -> rules channel (back-pressure, no drops).
pub const READINGS_CAPACITY: usize = 1024;
/// Capacity of the rules -> broker channel (back-pressure, no drops).
pub const PUBLISH_CAPACITY: usize = 1024;
/// How long sources get to stop after shutdown is asked for, and the
/// rules stage to drain after them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);
/// The stages after the bridge: the publisher's drain, the last flush to
/// local subscribers, the broker's stop.
const PUBLISHER_DEADLINE: Duration = Duration::from_secs(2);
const LOCAL_FLUSH: Duration = Duration::from_secs(1);
const BROKER_STOP: Duration = Duration::from_secs(2);
/// The longest stop, all stages' deadlines together: sources and rules
/// 3 s each, the `offline` status 1 s, the bridge 10 s, then 2 + 1 + 2 s:
/// 22 s, 8 s inside the unit's `TimeoutStopSec=30s`.
pub const STOP_WORST_CASE: Duration = Duration::from_secs(22);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Http(#[from] ops::http::HttpError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error("startup task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the gateway until `shutdown` is cancelled, then stops in order,
/// every stage with a deadline, within [`STOP_WORST_CASE`] in all.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let config = Arc::new(config);
    reading::clock::set_check(config.gateway.clock_check == settings::ClockCheck::Kernel);
    let gateway: Arc<str> = config.gateway.id.as_str().into();

    let broker = Broker::start(&config.broker, &config.gateway.data_dir).await?;
    // each stage's metrics exist from the start (the broker's, the
    // bridge's and the rules stage's register as they start)
    southbound::metrics::get();
    publish_dropped();
    let handle = broker.handle();

    let ops_cancel = CancellationToken::new();
    if let Some(m) = &config.metrics {
        let api = ops::api::Api::new(
            gateway.to_string(),
            ops::points::catalogue(&config.devices),
            handle.clone(),
        );
        let page = ops::page::Page::new(api, ops::http::page_auth(m, &config.broker)?);
        ops::http::serve(m, gateway.to_string(), Arc::new(page), ops_cancel.clone()).await?;
    }

    let (pub_tx, pub_rx) = mpsc::channel::<Publish>(PUBLISH_CAPACITY);
    // With an uplink, the bridge sits between the rules and the local broker.
    let (bridge, pub_rx) = match &config.uplink {
        Some(up) => {
            let (b, rx) = bridge::Bridge::start(
                up,
                &gateway,
                &config.gateway.data_dir,
                pub_rx,
                PUBLISH_CAPACITY,
                Some(handle.clone()),
            )
            .await?;
            (Some(b), rx)
        }
        None => (None, pub_rx),
    };
    let (read_tx, read_rx) = mpsc::channel::<Reading>(READINGS_CAPACITY);
    let queues: Vec<Box<dyn ops::notify::QueueLen>> = vec![
        Box::new(ops::notify::Queue {
            name: "readings",
            sender: read_tx.downgrade(),
        }),
        Box::new(ops::notify::Queue {
            name: "publishes",
            sender: pub_tx.downgrade(),
        }),
    ];

    let publisher =
        tokio::spawn(publish_all(handle.clone(), pub_rx).instrument(info_span!("publisher")));
    // Cannot fail: the publisher holds the receiver until all senders drop.
    let _ = pub_tx.send(reading::status::gateway(&gateway, true)).await;

    let rules = {
        let config = config.clone();
        let out = pub_tx.clone();
        tokio::spawn(
            async move {
                rules::run(
                    &config.gateway.id,
                    &config.rules,
                    &config.source,
                    read_rx,
                    out,
                )
                .await
            }
            .instrument(info_span!("rules")),
        )
    };

    let sources_cancel = shutdown.child_token();
    let tracker = TaskTracker::new();
    let ctx = SourceContext::new(
        gateway.clone(),
        read_tx,
        pub_tx.clone(),
        sources_cancel.clone(),
    )
    .with_data_dir(&config.gateway.data_dir);
    let mut routes = southbound::commands::Routes::new();
    for source in southbound::build_all(&config.devices, &mut routes) {
        info!(source = source.name(), "starting source");
        tracker.spawn(source.run(ctx.clone()));
    }
    tracker.spawn(
        southbound::commands::run(
            gateway.clone(),
            handle.subscribe(
                "commands",
                &[southbound::commands::filter(&gateway)],
                southbound::commands::QUEUE_CAPACITY,
            ),
            routes,
            pub_tx.clone(),
            sources_cancel.clone(),
        )
        .instrument(info_span!("commands")),
    );
    if let Some(ha) = &config.homeassistant {
        let mapping = rules::DefaultMapping::new(&gateway, &config.rules);
        let devices = ops::points::catalogue(&config.devices);
        let entities = ops::homeassistant::entities(&ha.prefix, &gateway, &devices, &|d, p| {
            mapping.topic(d, p)
        });
        tokio::spawn(
            ops::homeassistant::run(
                ha.clone(),
                config.gateway.data_dir.clone(),
                entities,
                handle.clone(),
                pub_tx.clone(),
                sources_cancel.clone(),
            )
            .instrument(info_span!("homeassistant")),
        );
    }
    drop(ctx);
    tracker.close();
    ops::notify::ready();
    tokio::spawn(ops::notify::run(queues, ops_cancel.clone()).instrument(info_span!("notify")));
    info!(
        gateway = %gateway,
        devices = config.devices.len(),
        listen = %config.broker.listen,
        "fieldgate running"
    );

    shutdown.cancelled().await;
    info!("shutting down: stopping sources");
    if let Some(b) = &bridge {
        b.close_local();
    }
    ops::notify::stopping();
    sources_cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        warn!(deadline = ?SHUTDOWN_DEADLINE, "sources did not stop in time; abandoning them");
    }
    // The rules stage ends when the last reading sender is dropped.
    if tokio::time::timeout(SHUTDOWN_DEADLINE, rules)
        .await
        .is_err()
    {
        warn!("rules stage did not drain in time");
    }
    let offline = reading::status::gateway(&gateway, false);
    if tokio::time::timeout(Duration::from_secs(1), pub_tx.send(offline))
        .await
        .is_err()
    {
        warn!("the gateway's offline status could not be queued in time");
    }
    drop(pub_tx);
    if let Some(b) = bridge {
        b.stop(bridge::STOP_BUDGET).await;
    }
    if tokio::time::timeout(PUBLISHER_DEADLINE, publisher)
        .await
        .is_err()
    {
        warn!("publisher did not drain in time");
    }
    // the final `offline` reaches local subscribers before they are closed
    handle.flush(LOCAL_FLUSH).await;
    broker.stop(BROKER_STOP).await;
    ops_cancel.cancel();
    info!("fieldgate stopped");
    Ok(())
}

/// Publishes what the rules stage (and the bridge's intake) produce into
/// the embedded broker, until every sender is gone. Drop policy: a publish
/// whose topic is not a valid MQTT topic name is logged and counted.
async fn publish_all(handle: broker::BrokerHandle, mut rx: mpsc::Receiver<Publish>) {
    while let Some(p) = rx.recv().await {
        let topic = p.topic.clone();
        if handle.publish(p).await {
            metrics::get().published.inc();
        } else {
            warn!(topic = %topic, "dropping publish with an invalid topic");
            publish_dropped()
                .get_or_create(&metrics::labels("reason", "invalid_topic"))
                .inc();
        }
    }
}

/// `fieldgate_publish_dropped`: publishes dropped before the broker, per
/// reason; registered when the gateway starts.
fn publish_dropped() -> &'static metrics::CounterFamily {
    static DROPPED: std::sync::LazyLock<metrics::CounterFamily> = std::sync::LazyLock::new(|| {
        metrics::get().register(
            "publish_dropped",
            "Publishes dropped before the broker",
            metrics::CounterFamily::default(),
        )
    });
    &DROPPED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stop's deadlines add up to [`STOP_WORST_CASE`], which leaves a
    /// margin inside the unit's `TimeoutStopSec` (systemd SIGKILLs after it).
    #[test]
    fn the_worst_case_stop_fits_the_units_timeout_with_a_margin() {
        let stages = SHUTDOWN_DEADLINE * 2
            + Duration::from_secs(1)
            + bridge::STOP_BUDGET
            + PUBLISHER_DEADLINE
            + LOCAL_FLUSH
            + BROKER_STOP;
        assert_eq!(stages, STOP_WORST_CASE);
        let unit = include_str!("../systemd/fieldgate.service");
        let timeout = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| humantime::parse_duration(v.trim()).ok())
            .expect("TimeoutStopSec in the unit");
        assert!(
            STOP_WORST_CASE + Duration::from_secs(5) <= timeout,
            "{STOP_WORST_CASE:?} leaves less than 5 s of {timeout:?}"
        );
    }
}
