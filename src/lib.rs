//! fieldgate: an IoT gateway that reads field devices, maps readings to MQTT
//! through rules, publishes them on an embedded broker and forwards them
//! upstream. The map of the code is docs/design.md.
//!
//! This file is the front door: [`run`] starts the stages one by one (a
//! `start_*` function each) and, at shutdown, works through `STOP_STEPS`
//! in order, each step within its deadline: sources stop first, the rules
//! stage drains what they sent, the gateway status turns `offline`, the
//! bridge commits what it was given and flushes the outbox upstream, the
//! publisher drains, and the broker closes its clients and commits its
//! store last. The public modules are what the binary, the benchmarks and
//! the tests use; the others are private.
//!
//! Owns the wiring: the channels between the stages and the shutdown
//! order. Must not hold a stage's own logic.

pub mod bridge;
mod broker;
pub mod config;
mod data_dir;
mod log_throttle;
mod metrics;
pub mod ops;
pub mod plan;
mod ports;
pub mod reading;
pub mod recent;
pub mod rules;
mod script;
pub mod settings;
mod southbound;
mod sparkplug;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::broker::auth::{Auth, AuthError};
use crate::broker::{Broker, BrokerConfig, BrokerError, BrokerHandle};
use crate::ops::http::HttpConfig;
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
/// How long the gateway's `offline` status may wait for room.
const OFFLINE_STATUS: Duration = Duration::from_secs(1);
/// The stages after the bridge: the publisher's drain, the last flush to
/// local subscribers, the broker's stop.
const PUBLISHER_DEADLINE: Duration = Duration::from_secs(2);
const LOCAL_FLUSH: Duration = Duration::from_secs(1);
const BROKER_STOP: Duration = Duration::from_secs(2);
/// The longest stop, all stages' deadlines together: sources and rules
/// 3 s each, the `offline` status 1 s, the bridge 10 s, then 2 + 1 + 2 s:
/// 22 s, 8 s inside the unit's `TimeoutStopSec=30s`.
pub const STOP_WORST_CASE: Duration = Duration::from_secs(22);

/// One step of the stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Sources stop (their tasks end).
    Sources,
    /// The rules stage drains what the sources sent.
    Rules,
    /// The gateway's status turns `offline`.
    OfflineStatus,
    /// The bridge commits what it was given and flushes upstream.
    Bridge,
    /// The publisher drains into the broker.
    Publisher,
    /// The last publishes reach local subscribers.
    LocalFlush,
    /// The broker writes out its queues, closes its clients, commits its store.
    Broker,
}

/// The stop, in order, each step with its deadline; together at most
/// [`STOP_WORST_CASE`].
const STOP_STEPS: [(Stop, Duration); 7] = [
    (Stop::Sources, SHUTDOWN_DEADLINE),
    (Stop::Rules, SHUTDOWN_DEADLINE),
    (Stop::OfflineStatus, OFFLINE_STATUS),
    (Stop::Bridge, bridge::STOP_BUDGET),
    (Stop::Publisher, PUBLISHER_DEADLINE),
    (Stop::LocalFlush, LOCAL_FLUSH),
    (Stop::Broker, BROKER_STOP),
];

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
    if let Some(http) = &config.http {
        start_http(http, &config, &gateway, &broker, &catalogue, &ops_cancel).await?;
    }

    let (pub_tx, pub_rx) = mpsc::channel::<Publish>(PUBLISH_CAPACITY);
    let (bridge, pub_rx) = start_bridge(&config, &gateway, pub_rx, &handle).await?;
    let (read_tx, read_rx) = reading::batch::channel(READINGS_CAPACITY);
    let (read_rx, onward, sparkplug) = start_sparkplug(&config, &gateway, &handle, read_rx).await?;
    let queues = queue_lengths(&read_tx, &pub_tx);
    let publisher =
        tokio::spawn(publish_all(handle.clone(), pub_rx).instrument(info_span!("publisher")));
    // Cannot fail: the publisher holds the receiver until all senders drop.
    let _ = pub_tx.send(reading::status::gateway(&gateway, true)).await;
    let rules = match read_rx {
        Some(rx) => Some(start_rules(&config, &catalogue, rx, pub_tx.clone(), onward)),
        None => {
            tokio::spawn(rules::answer_hangups_without_stage(ops_cancel.clone()));
            None
        }
    };
    let sources = start_sources(&config, &gateway, read_tx, &pub_tx, commands, &shutdown);
    if let Some(ha) = &config.homeassistant {
        start_homeassistant(
            ha, &config, &gateway, &catalogue, &handle, &pub_tx, &sources,
        );
    }
    ops::notify::ready();
    tokio::spawn(ops::notify::run(queues, ops_cancel.clone()).instrument(info_span!("notify")));
    info!(
        gateway = %gateway,
        devices = config.devices.len(),
        listen = ?config.broker.listen,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "fieldgate running"
    );

    shutdown.cancelled().await;
    let running = Running {
        gateway,
        sources,
        rules,
        sparkplug,
        publishes: Some(pub_tx),
        bridge,
        publisher: Some(publisher),
        handle,
        broker: Some(broker),
    };
    running.stop().await;
    ops_cancel.cancel();
    info!("fieldgate stopped");
    Ok(())
}

/// The HTTP listener: `/metrics`, `/healthz`, the status page and its API.
async fn start_http(
    http: &HttpConfig,
    config: &Config,
    gateway: &str,
    broker: &Broker,
    catalogue: &[ports::points::DeviceSpec],
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    recent::history::configure(http.history.get(), http.history_bucket.get());
    let handle = broker.handle();
    let clients: Arc<dyn ports::Clients> = Arc::new(handle);
    let api =
        ops::api::Api::new(gateway.to_string(), catalogue.to_vec()).with_clients(clients.clone());
    let uplink = config.uplink.as_ref().map(|_| {
        let t = Arc::new(ops::trend::UplinkTrend::new(http.history.get()));
        tokio::spawn(ops::trend::run(t.clone(), cancel.clone()));
        t
    });
    let histories = ops::history::Histories {
        devices: catalogue.to_vec(),
        uplink,
        clients: Some(clients),
    };
    let logins =
        page_logins(http, &config.broker, broker.logins()).map_err(RunError::PageLogins)?;
    let page = ops::page::Page::new(api, histories, logins);
    ops::http::serve(http, gateway.to_string(), Arc::new(page), cancel.clone()).await?;
    Ok(())
}

/// With an uplink, the bridge sits between the rules and the local
/// broker: it takes the publishes and hands on a receiver of its own.
async fn start_bridge(
    config: &Config,
    gateway: &str,
    publishes: mpsc::Receiver<Publish>,
    handle: &BrokerHandle,
) -> Result<(Option<bridge::Bridge>, mpsc::Receiver<Publish>), RunError> {
    let Some(up) = &config.uplink else {
        return Ok((None, publishes));
    };
    let (b, rx) = bridge::Bridge::start(
        up,
        gateway,
        &config.gateway.data_dir,
        publishes,
        PUBLISH_CAPACITY,
        Some(handle.clone()),
    )
    .await?;
    Ok((Some(b), rx))
}

/// The queues the systemd STATUS line and the watchdog look at.
fn queue_lengths(
    readings: &reading::batch::ReadingsSender,
    publishes: &mpsc::Sender<Publish>,
) -> Vec<Box<dyn ops::notify::QueueLen>> {
    vec![
        Box::new(ops::notify::ReadingsQueue {
            name: "readings",
            sender: readings.downgrade(),
        }),
        Box::new(ops::notify::Queue {
            name: "publishes",
            sender: publishes.downgrade(),
        }),
    ]
}

/// The rules stage: readings in, publishes out, each batch on to
/// `onward` once mapped; it ends when the last reading sender is dropped.
fn start_rules(
    config: &Arc<Config>,
    catalogue: &[ports::points::DeviceSpec],
    readings: reading::batch::ReadingsReceiver,
    out: mpsc::Sender<Publish>,
    onward: rules::Onward,
) -> JoinHandle<()> {
    let config = config.clone();
    let devices = catalogue.to_vec();
    tokio::spawn(
        async move {
            rules::run(
                &config.gateway.id,
                &config.rules,
                &config.source,
                &devices,
                readings,
                out,
                onward,
            )
            .await
        }
        .instrument(info_span!("rules")),
    )
}

/// The sources and the commands task, under one token and one tracker.
struct Sources {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// One source per device (or shared bus), and the commands task that
/// routes `.../set` to them.
fn start_sources(
    config: &Config,
    gateway: &Arc<str>,
    readings: reading::batch::ReadingsSender,
    publishes: &mpsc::Sender<Publish>,
    commands: mpsc::Receiver<broker::Message>,
    shutdown: &CancellationToken,
) -> Sources {
    let cancel = shutdown.child_token();
    let tracker = TaskTracker::new();
    let ctx = SourceContext::new(gateway.clone(), readings, publishes.clone(), cancel.clone())
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
            publishes.clone(),
            cancel.clone(),
        )
        .instrument(info_span!("commands")),
    );
    tracker.close();
    Sources { cancel, tracker }
}

/// Home Assistant discovery, stopped with the sources.
fn start_homeassistant(
    ha: &ops::homeassistant::HomeAssistantConfig,
    config: &Config,
    gateway: &str,
    catalogue: &[ports::points::DeviceSpec],
    handle: &BrokerHandle,
    publishes: &mpsc::Sender<Publish>,
    sources: &Sources,
) {
    let mapping = rules::DefaultMapping::new(gateway, &config.rules);
    let grouped =
        config.rules.payload == rules::Payload::PerDevice && config.rules.scripts.is_empty();
    let entities = ops::homeassistant::entities(
        &ha.prefix,
        gateway,
        catalogue,
        &|d, p| mapping.topic(d, p),
        grouped,
    );
    tokio::spawn(
        ops::homeassistant::run(
            ha.clone(),
            config.gateway.data_dir.clone(),
            entities,
            Arc::new(handle.clone()),
            publishes.clone(),
            sources.cancel.clone(),
        )
        .instrument(info_span!("homeassistant")),
    );
}

/// What the stop works through, step by step ([`STOP_STEPS`]).
struct Running {
    gateway: Arc<str>,
    sources: Sources,
    rules: Option<JoinHandle<()>>,
    /// The Sparkplug node, when `sparkplug:` is on: it ends with the rules
    /// stage (the last reading sender dropped), after its NDEATH.
    sparkplug: Option<JoinHandle<()>>,
    /// The gateway's own sender of publishes (the rules stage and the
    /// sources hold the others).
    publishes: Option<mpsc::Sender<Publish>>,
    bridge: Option<bridge::Bridge>,
    publisher: Option<JoinHandle<()>>,
    handle: BrokerHandle,
    broker: Option<Broker>,
}

impl Running {
    /// Stops the gateway: local clients' publishes are no longer taken
    /// for the uplink, systemd hears the stop, then [`STOP_STEPS`] in order.
    async fn stop(mut self) {
        info!("shutting down: stopping sources");
        if let Some(b) = &self.bridge {
            b.close_local();
        }
        ops::notify::stopping();
        for (step, deadline) in STOP_STEPS {
            self.stop_step(step, deadline).await;
        }
    }

    /// Runs one step of the stop within `deadline`.
    async fn stop_step(&mut self, step: Stop, deadline: Duration) {
        match step {
            Stop::Sources => {
                self.sources.cancel.cancel();
                if timeout(deadline, self.sources.tracker.wait())
                    .await
                    .is_err()
                {
                    warn!(deadline = ?deadline, "sources did not stop in time; abandoning them");
                }
            }
            Stop::Rules => {
                // the rules stage and the Sparkplug node, side by side
                let rules = self.rules.take();
                let sparkplug = self.sparkplug.take();
                let (rules, sparkplug) = tokio::join!(
                    timeout(deadline, async move {
                        if let Some(t) = rules {
                            let _ = t.await;
                        }
                    }),
                    timeout(deadline, async move {
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
            }
            Stop::OfflineStatus => {
                // the last of the gateway's own publishes: its sender goes
                if let Some(tx) = self.publishes.take() {
                    let offline = reading::status::gateway(&self.gateway, false);
                    if timeout(deadline, tx.send(offline)).await.is_err() {
                        warn!("the gateway's offline status could not be queued in time");
                    }
                }
            }
            Stop::Bridge => {
                if let Some(b) = self.bridge.take() {
                    b.stop(deadline).await;
                }
            }
            Stop::Publisher => {
                if let Some(publisher) = self.publisher.take()
                    && timeout(deadline, publisher).await.is_err()
                {
                    warn!("publisher did not drain in time");
                }
            }
            // the final `offline` reaches local subscribers before they are closed
            Stop::LocalFlush => self.handle.flush(deadline).await,
            Stop::Broker => {
                if let Some(broker) = self.broker.take() {
                    broker.stop(deadline).await;
                }
            }
        }
    }
}

/// The Sparkplug stage when `sparkplug:` is enabled, and who takes the
/// sources' `readings`: the rules stage (they are returned for it), which
/// hands each batch on to the node once mapped (the returned
/// [`rules::Onward`]); or, with `rules.payload: none` and no scripts, the
/// node itself, and no rules stage runs. The node's task ends after the
/// readings end, with an NDEATH.
async fn start_sparkplug(
    config: &Config,
    gateway: &Arc<str>,
    handle: &broker::BrokerHandle,
    readings: reading::batch::ReadingsReceiver,
) -> Result<
    (
        Option<reading::batch::ReadingsReceiver>,
        rules::Onward,
        Option<JoinHandle<()>>,
    ),
    sparkplug::SparkplugError,
> {
    let Some(sp) = config.sparkplug.as_ref().filter(|s| s.enabled) else {
        return Ok((Some(readings), rules::Onward::nowhere(), None));
    };
    let direct = config.rules.publishes_no_readings();
    let (rest, onward, readings) = if direct {
        let from_sources = sparkplug::Readings::FromSources(readings);
        (None, rules::Onward::nowhere(), from_sources)
    } else {
        let (tx, after_rules) = sparkplug::readings_queue();
        (Some(readings), rules::Onward::to(tx), after_rules)
    };
    let task = sparkplug::start(
        sp,
        config.uplink.as_ref(),
        (gateway, &config.devices),
        &config.gateway.data_dir,
        handle,
        readings,
    )
    .await?;
    if direct {
        info!(
            "rules: payload none, no scripts: no rules stage; the Sparkplug node takes the readings"
        );
    }
    Ok((rest, onward, Some(task)))
}

/// The password store the status page checks: `http.users` when given,
/// else the broker's users and password file; `None` when there is none
/// (no login asked).
fn page_logins(
    http: &HttpConfig,
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
async fn publish_all(handle: BrokerHandle, mut rx: mpsc::Receiver<Publish>) {
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
        let no_http: HttpConfig = serde_yaml_ng::from_str("{}").unwrap();
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
        let stages: Duration = STOP_STEPS.iter().map(|(_, deadline)| *deadline).sum();
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
