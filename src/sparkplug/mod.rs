//! The Sparkplug B 3.0 edge node (`sparkplug:`): the gateway as one edge
//! node of a Sparkplug group, each configured field device a Sparkplug
//! device, each point a metric. See docs/sparkplug.md for the user's view
//! and docs/design.md ("Sparkplug") for how it sits in the pipeline.
//!
//! Owns the Sparkplug topics, payloads and state. Must not talk to devices
//! (writes go through the `.../set` path of `southbound::commands`) nor
//! change what the rules stage publishes; it imports southbound only to
//! read the device configs.

pub mod commands;
pub mod config;
pub mod describe;
pub mod encode;
pub mod exception;
pub mod history;
pub mod host;
pub mod link;
pub(crate) mod metrics;
pub mod model;
pub mod node;
pub mod payload;
pub mod seq;
pub mod task;
pub mod topics;
pub mod uplink;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span, warn};

pub use config::{SparkplugConfig, Target};
pub use task::Readings;

use crate::bridge::UplinkConfig;
use crate::broker::BrokerHandle;
use crate::reading::Reading;
use crate::southbound::devices::DeviceConfig;

/// Batches of readings the node may have waiting (back-pressure on the
/// rules stage, and so on the sources, beyond it; nothing is dropped).
pub const READINGS_QUEUE: usize = 64;
/// Messages of the node's in-process subscription (status, STATE,
/// commands) waiting; past it the broker's drop policy for a slow
/// subscriber applies.
pub const MESSAGES_QUEUE: usize = 256;

/// Why the Sparkplug node could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum SparkplugError {
    #[error("sparkplug: bdSeq file {file}: {source}")]
    BdSeq {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sparkplug: history {path}: {source}")]
    History {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("sparkplug.target uplink: {0}")]
    Uplink(String),
}

/// The node's readings queue when the rules stage feeds it
/// ([`Readings::AfterRules`]; the sender is for `rules::Onward`).
pub fn readings_queue() -> (mpsc::Sender<Vec<Reading>>, Readings) {
    let (tx, rx) = mpsc::channel(READINGS_QUEUE);
    (tx, Readings::AfterRules(rx))
}

/// Starts the edge node (the caller checked `cfg.enabled`) on `readings`
/// and subscribes on the embedded broker. The task ends once the readings
/// end (the sources stopped, then the rules stage if any), with an NDEATH.
pub async fn start(
    cfg: &SparkplugConfig,
    uplink: Option<&UplinkConfig>,
    (gateway, devices): (&Arc<str>, &[DeviceConfig]),
    data_dir: &Path,
    handle: &BrokerHandle,
    readings: Readings,
) -> Result<JoinHandle<()>, SparkplugError> {
    let ids = topics::Ids {
        group: cfg.group_id.clone(),
        node: cfg.node_id(gateway).to_string(),
    };
    let bd_seq = seq::BdSeq::open(data_dir)?;
    let reporting = node::Reporting {
        report_by_exception: cfg.report_by_exception,
        deadband: cfg.deadband,
    };
    let node = node::Node::new(
        ids.clone(),
        model::build(devices),
        reporting,
        bd_seq.current(),
    );
    let history = match history::History::open(
        data_dir,
        cfg.history_max_rows,
        cfg.history_commit_window.get(),
    )
    .await
    {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "Sparkplug runs without history: data while the primary host is offline is lost");
            None
        }
    };
    let state_topic = cfg.primary_host_id.as_deref().map(topics::state_topic);
    // NCMD, DCMD and STATE: on the broker the node publishes on
    let mut commands: Vec<String> = ids.command_filters().into();
    commands.extend(state_topic.clone());
    let mut local = vec![crate::reading::status::device_topic(gateway, "+")];
    let sink = match (cfg.target, uplink) {
        (Target::Uplink, Some(up)) => {
            let endpoint = uplink::Endpoint::of(up, gateway)?;
            link::Sink::Uplink(Box::new(link::Link::new(endpoint, commands)))
        }
        (Target::Uplink, None) => {
            return Err(SparkplugError::Uplink(
                "there is no `uplink:` section".into(),
            ));
        }
        (Target::Local, _) => {
            local.extend(commands);
            link::Sink::Local(handle.clone())
        }
    };
    let messages = handle.subscribe("sparkplug", &local, MESSAGES_QUEUE);
    let parts = task::Parts {
        node,
        bd_seq,
        host: cfg
            .primary_host_id
            .as_ref()
            .map(|_| host::HostWatch::default()),
        history,
        handle: handle.clone(),
        sink,
        gateway: gateway.clone(),
        state_topic,
        pace: task::Pace {
            rate: cfg.history_rate,
            batch: cfg.history_batch,
        },
    };
    metrics::get();
    let task =
        tokio::spawn(task::run(parts, readings, messages).instrument(info_span!("sparkplug")));
    Ok(task)
}
