//! fieldgate: an IoT gateway that reads field devices, maps readings to MQTT
//! through rules, publishes them on an embedded broker and forwards them
//! upstream.
//!
//! Module map (see DESIGN.md §2):
//! - [`config`]: the YAML schema, loading and validation with YAML paths;
//! - [`reading`]: `Reading`, `Value`, `Quality`, `Publish`, the types between stages;
//! - [`southbound`]: one source per device kind (`simulated` so far);
//! - [`rules`]: readings to publishes (the default mapping);
//! - [`broker`]: the embedded rumqttd and its in-process links;
//! - [`bridge`]: the store-and-forward uplink (SQLite outbox, rumqttc);
//! - [`ops`]: status topics;
//! - [`plan`]: what `fieldgate check` prints.
//!
//! [`run`] wires the stages together and owns the shutdown order: sources
//! stop first, the rules stage drains what they sent, the gateway status
//! turns `offline`, the bridge commits what it was given and flushes the
//! outbox upstream within a deadline, and the broker link drains last.

pub mod bridge;
pub mod broker;
pub mod config;
pub mod ops;
pub mod plan;
pub mod reading;
pub mod rules;
pub mod southbound;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::reading::{Publish, Reading};
use crate::southbound::SourceContext;

/// Capacity of the sources -> rules channel (back-pressure, no drops).
pub const READINGS_CAPACITY: usize = 1024;
/// Capacity of the rules -> broker channel (back-pressure, no drops).
pub const PUBLISH_CAPACITY: usize = 1024;
/// How long sources get to stop after shutdown is asked for.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error("startup task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs the gateway until `shutdown` is cancelled, then stops in order
/// within [`SHUTDOWN_DEADLINE`] per stage.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let config = Arc::new(config);
    let gateway: Arc<str> = config.gateway.id.as_str().into();

    let broker_cfg = config.broker.clone();
    let with_uplink = config.uplink.is_some();
    let (publisher_link, bridge_link) =
        tokio::task::spawn_blocking(move || -> Result<_, BrokerError> {
            let broker = Broker::new(&broker_cfg)?;
            let link = broker.link("fieldgate-publisher")?;
            let bridge_link = if with_uplink {
                Some(broker.link("fieldgate-bridge")?)
            } else {
                None
            };
            broker.start()?;
            Ok((link, bridge_link))
        })
        .await??;

    let (pub_tx, pub_rx) = mpsc::channel::<Publish>(PUBLISH_CAPACITY);
    // With an uplink, the bridge sits between the rules and the local broker.
    let (bridge, pub_rx) = match &config.uplink {
        Some(up) => {
            let (b, rx) =
                bridge::Bridge::start(up, &gateway, &config.gateway.data_dir, pub_rx, bridge_link)
                    .await?;
            (Some(b), rx)
        }
        None => (None, pub_rx),
    };
    let (read_tx, read_rx) = mpsc::channel::<Reading>(READINGS_CAPACITY);

    let publisher =
        tokio::spawn(broker::publisher(publisher_link, pub_rx).instrument(info_span!("publisher")));
    // Cannot fail: the publisher holds the receiver until all senders drop.
    let _ = pub_tx.send(ops::status::gateway(&gateway, true)).await;

    let rules = {
        let config = config.clone();
        let out = pub_tx.clone();
        tokio::spawn(
            async move { rules::run(&config, read_rx, out).await }.instrument(info_span!("rules")),
        )
    };

    let sources_cancel = shutdown.child_token();
    let tracker = TaskTracker::new();
    let ctx = SourceContext::new(
        gateway.clone(),
        read_tx,
        pub_tx.clone(),
        sources_cancel.clone(),
    );
    for source in southbound::build_all(&config.devices) {
        info!(source = source.name(), "starting source");
        tracker.spawn(source.run(ctx.clone()));
    }
    drop(ctx);
    tracker.close();
    info!(
        gateway = %gateway,
        devices = config.devices.len(),
        listen = %config.broker.listen,
        "fieldgate running"
    );

    shutdown.cancelled().await;
    info!("shutting down: stopping sources");
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
    let _ = pub_tx.send(ops::status::gateway(&gateway, false)).await;
    drop(pub_tx);
    if let Some(b) = bridge {
        b.stop(SHUTDOWN_DEADLINE).await;
    }
    if tokio::time::timeout(SHUTDOWN_DEADLINE, publisher)
        .await
        .is_err()
    {
        warn!("broker link did not drain in time");
    }
    info!("fieldgate stopped");
    Ok(())
}
