//! fieldgate: an IoT gateway that reads field devices, maps readings to MQTT
//! through rules, publishes them on an embedded broker and forwards them
//! upstream.
//!
//! The map of the modules, their layers and what each owns is
//! docs/design.md ("Module map"), the one map of the code.
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
pub mod ports;
pub mod reading;
pub mod rules;
pub mod script;
pub mod settings;
pub mod southbound;
pub mod sparkplug;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::broker::auth::{Auth, AuthError};
use crate::broker::{Broker, BrokerConfig, BrokerError};
use crate::ops::http::MetricsConfig;
use crate::ports::PasswordCheck;
use crate::reading::Publish;
use crate::settings::Config;
use crate::southbound::SourceContext;

/// Capacity of the sources -> rules channel in readings (it carries
/// batches, one per device request: `reading::batch`; back-pressure, no
/// drops).
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
    #[error("http.users: {0}")]
    PageLogins(#[source] AuthError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error(transparent)]
    Sparkplug(#[from] sparkplug::SparkplugError),
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
    // the commands task's subscription exists before the bridge connects
    // upstream: a command queued there while the gateway was down can
    // arrive at once, and must find it
    let commands = handle.subscribe(
        "commands",
        &[southbound::commands::filter(&gateway)],
        southbound::commands::QUEUE_CAPACITY,
    );

    // what ops shows of the configured points (ops imports no stage)
    let catalogue = southbound::catalogue::build(&config.devices);
    let ops_cancel = CancellationToken::new();
    if let Some(m) = &config.metrics {
        metrics::history::configure(m.history.get(), m.history_bucket.get());
        let clients: Arc<dyn ports::Clients> = Arc::new(handle.clone());
        let api = ops::api::Api::new(gateway.to_string(), catalogue.clone())
            .with_clients(clients.clone());
        let uplink = config.uplink.as_ref().map(|_| {
            let t = Arc::new(ops::trend::UplinkTrend::new(m.history.get()));
            tokio::spawn(ops::trend::run(t.clone(), ops_cancel.clone()));
            t
        });
        let histories = ops::history::Histories {
            devices: catalogue.clone(),
            uplink,
            clients: Some(clients),
        };
        let logins =
            page_logins(m, &config.broker, broker.logins()).map_err(RunError::PageLogins)?;
        let page = ops::page::Page::new(api, histories, logins);
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
    let (read_tx, read_rx) = reading::batch::channel(READINGS_CAPACITY);
    let (read_rx, sparkplug) = start_sparkplug(&config, &gateway, &handle, read_rx).await?;
    let queues: Vec<Box<dyn ops::notify::QueueLen>> = vec![
        Box::new(ops::notify::ReadingsQueue {
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
        let devices = catalogue.clone();
        let out = pub_tx.clone();
        tokio::spawn(
            async move {
                rules::run(
                    &config.gateway.id,
                    &config.rules,
                    &config.source,
                    &devices,
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
            commands,
            routes,
            pub_tx.clone(),
            sources_cancel.clone(),
        )
        .instrument(info_span!("commands")),
    );
    if let Some(ha) = &config.homeassistant {
        let mapping = rules::DefaultMapping::new(&gateway, &config.rules);
        let grouped =
            config.rules.payload == rules::Payload::PerDevice && config.rules.scripts.is_empty();
        let entities = ops::homeassistant::entities(
            &ha.prefix,
            &gateway,
            &catalogue,
            &|d, p| mapping.topic(d, p),
            grouped,
        );
        tokio::spawn(
            ops::homeassistant::run(
                ha.clone(),
                config.gateway.data_dir.clone(),
                entities,
                Arc::new(handle.clone()),
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
        listen = ?config.broker.listen,
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
    // The rules stage (and the Sparkplug node, which sends its NDEATH)
    // ends when the last reading sender is dropped.
    let (rules, sparkplug) = tokio::join!(
        tokio::time::timeout(SHUTDOWN_DEADLINE, rules),
        tokio::time::timeout(SHUTDOWN_DEADLINE, async move {
            if let Some(t) = sparkplug {
                let _ = t.await;
            }
        })
    );
    if rules.is_err() {
        warn!("rules stage did not drain in time");
    }
    if sparkplug.is_err() {
        warn!("Sparkplug node did not stop in time");
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

/// The Sparkplug stage: taps the readings on their way to the rules stage
/// when `sparkplug:` is enabled (the rules stage gets the returned
/// receiver); its task ends after the sources, with an NDEATH.
async fn start_sparkplug(
    config: &Config,
    gateway: &Arc<str>,
    handle: &broker::BrokerHandle,
    readings: reading::batch::ReadingsReceiver,
) -> Result<
    (
        reading::batch::ReadingsReceiver,
        Option<tokio::task::JoinHandle<()>>,
    ),
    sparkplug::SparkplugError,
> {
    sparkplug::start(
        config.sparkplug.as_ref(),
        config.uplink.as_ref(),
        gateway,
        &config.devices,
        &config.gateway.data_dir,
        handle,
        readings,
        READINGS_CAPACITY,
    )
    .await
}

/// The password store the status page checks: `http.users` when given,
/// else the broker's users and password file; `None` when there is none
/// (no login asked).
fn page_logins(
    http: &MetricsConfig,
    broker: &BrokerConfig,
    broker_logins: Arc<dyn PasswordCheck>,
) -> Result<Option<Arc<dyn PasswordCheck>>, AuthError> {
    if !http.users.is_empty() {
        return Ok(Some(Arc::new(Auth::of_users(&http.users)?)));
    }
    if broker.users.is_empty() && broker.password_file.is_none() {
        return Ok(None);
    }
    // the broker's own: one failure count per address for MQTT and the page
    Ok(Some(broker_logins))
}

/// Publishes what the rules stage (and the bridge's intake) produce into
/// the embedded broker, until every sender is gone. Drop policy: a publish
/// whose topic is not a valid MQTT topic name is logged and counted.
async fn publish_all(handle: broker::BrokerHandle, mut rx: mpsc::Receiver<Publish>) {
    while let Some(p) = rx.recv().await {
        if !broker::valid_publish_topic(&p.topic) {
            warn!(topic = %p.topic, "dropping publish with an invalid topic");
            publish_dropped()
                .get_or_create(&metrics::labels("reason", "invalid_topic"))
                .inc();
        } else {
            handle.publish_valid(p).await;
            metrics::get().published.inc();
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

    /// The page checks `http.users` when given, else the broker's users;
    /// with neither, no login is asked.
    #[test]
    fn the_page_checks_http_users_else_the_brokers() {
        let dir = tempfile::tempdir().unwrap();
        let user = |name: &str, pw: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, format!("{pw}\n")).unwrap();
            config::LoginUser {
                username: name.into(),
                password_env: None,
                password_file: Some(file),
            }
        };
        let no_http: MetricsConfig = serde_yaml_ng::from_str("{}").unwrap();
        let mut broker = BrokerConfig::default();
        let shared =
            |b: &BrokerConfig| -> Arc<dyn PasswordCheck> { Arc::new(Auth::new(b).unwrap()) };
        assert!(
            page_logins(&no_http, &broker, shared(&broker))
                .unwrap()
                .is_none()
        );
        broker.users.push(user("mqtt", "m-pw"));
        let logins = page_logins(&no_http, &broker, shared(&broker))
            .unwrap()
            .unwrap();
        assert!(logins.check("mqtt", b"m-pw"));
        assert!(!logins.check("mqtt", b"wrong"));
        let mut http = no_http.clone();
        http.users.push(user("tech", "t-pw"));
        let logins = page_logins(&http, &broker, shared(&broker))
            .unwrap()
            .unwrap();
        assert!(logins.check("tech", b"t-pw"));
        assert!(!logins.check("mqtt", b"m-pw"));
    }

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
