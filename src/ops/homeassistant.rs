//! Home Assistant MQTT discovery (`homeassistant:`): one retained config
//! message per point on `{prefix}/{component}/{gateway}_{device}_{point}/config`,
//! one for the gateway itself, removal of configs whose point left the
//! config, and a re-send when Home Assistant's birth message
//! (`{prefix}/status` = `online`) arrives.
//!
//! Owns `HomeAssistantConfig`, the payload shapes and
//! `{data_dir}/homeassistant.json` (the topics published last time). Must
//! not change pipeline state: it publishes through the gateway's publish
//! channel (so a `forward` filter on the prefix takes them upstream) and
//! watches the birth topic as an in-process subscriber, through the ports
//! leaf's [`Watch`] (it imports no stage).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ports::Watch;
use crate::ports::points::{DeviceSpec, PointKind, PointSpec};
use crate::reading::{Publish, Qos};
use crate::reading::{command, status};

/// Where the topics published last time are kept, inside `data_dir`.
pub const STATE_FILE: &str = "homeassistant.json";
/// Capacity of the birth-topic subscriber (births are rare; a full queue
/// drops per the broker's policy, and the next birth re-sends anyway).
const BIRTH_CAPACITY: usize = 8;

/// `homeassistant:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Discovery prefix; Home Assistant's default is `homeassistant`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn yes() -> bool {
    true
}

fn default_prefix() -> String {
    "homeassistant".into()
}

/// Why the list of published topics could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a list of topics: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One discovery message: its topic and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub topic: String,
    pub payload: Json,
}

/// The Home Assistant component a point becomes.
pub fn component(p: &PointSpec) -> &'static str {
    match (p.kind, p.writable) {
        (PointKind::Bool, false) => "binary_sensor",
        (PointKind::Bool, true) => "switch",
        (PointKind::Integer { .. } | PointKind::Float | PointKind::Float32, true) => "number",
        (PointKind::Text, true) => "text",
        (_, false) => "sensor",
    }
}

/// The value template of a point: its reading's `value`, or (`grouped`:
/// `rules.payload: per_device`) its entry in the device's message.
fn value_template(point: &str, bool_point: bool, grouped: bool) -> String {
    let value = match grouped {
        true => format!("value_json.points['{point}'].value"),
        false => "value_json.value".to_string(),
    };
    match bool_point {
        true => format!("{{{{ 'ON' if {value} else 'OFF' }}}}"),
        false => format!("{{{{ {value} }}}}"),
    }
}

/// Every discovery message for this gateway: the gateway's own
/// connectivity sensor first, then one per point. `state_topic(device,
/// point)` is where the point's readings are published; `grouped`: they
/// come in one message per device (`rules.payload: per_device`).
pub fn entities(
    prefix: &str,
    gateway: &str,
    devices: &[DeviceSpec],
    state_topic: &dyn Fn(&str, &str) -> String,
    grouped: bool,
) -> Vec<Entity> {
    let version = env!("CARGO_PKG_VERSION");
    let discovery = Discovery {
        prefix,
        gateway,
        grouped,
        origin: json!({"name": "fieldgate", "sw_version": version}),
    };
    let mut out = vec![discovery.gateway_entity(version)];
    for d in devices {
        let device = discovery.device(d);
        for p in &d.points {
            let state = state_topic(&d.name, &p.name);
            out.push(discovery.point_entity(&d.name, p, &state, &device));
        }
    }
    out
}

/// What every discovery message of this gateway shares.
struct Discovery<'a> {
    prefix: &'a str,
    gateway: &'a str,
    grouped: bool,
    origin: Json,
}

/// What every point of one device shares: the Home Assistant device and
/// the availability (the gateway's status and the device's).
struct DeviceJson {
    device: Json,
    availability: Json,
}

impl Discovery<'_> {
    /// The gateway's connectivity sensor.
    fn gateway_entity(&self, version: &str) -> Entity {
        let gateway = self.gateway;
        Entity {
            topic: format!("{}/binary_sensor/{gateway}_status/config", self.prefix),
            payload: json!({
                "name": "Status",
                "unique_id": format!("{gateway}_status"),
                "state_topic": status::gateway_topic(gateway),
                "payload_on": "online",
                "payload_off": "offline",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "device": {
                    "identifiers": [gateway],
                    "name": gateway,
                    "manufacturer": "fieldgate",
                    "model": "fieldgate gateway",
                    "sw_version": version,
                },
                "origin": self.origin,
            }),
        }
    }

    fn device(&self, d: &DeviceSpec) -> DeviceJson {
        let gateway = self.gateway;
        DeviceJson {
            device: json!({
                "identifiers": [format!("{gateway}_{}", d.name)],
                "name": d.name,
                "manufacturer": "fieldgate",
                "model": d.kind,
                "via_device": gateway,
            }),
            availability: json!([
                {"topic": status::gateway_topic(gateway), "payload_available": "online", "payload_not_available": "offline"},
                {
                    "topic": status::device_topic(gateway, &d.name),
                    "value_template": "{{ value_json.state }}",
                    "payload_available": "online",
                    "payload_not_available": "offline",
                },
            ]),
        }
    }

    /// One point's entity, its readings on `state`.
    fn point_entity(
        &self,
        device: &str,
        p: &PointSpec,
        state: &str,
        shared: &DeviceJson,
    ) -> Entity {
        let gateway = self.gateway;
        let id = format!("{gateway}_{device}_{}", p.name);
        let comp = component(p);
        let mut m = serde_json::Map::new();
        m.insert("name".into(), p.name.clone().into());
        m.insert("unique_id".into(), id.clone().into());
        m.insert("state_topic".into(), state.into());
        let bool_point = matches!(p.kind, PointKind::Bool);
        m.insert(
            "value_template".into(),
            value_template(&p.name, bool_point, self.grouped).into(),
        );
        if let Some(u) = &p.unit
            && !bool_point
            && p.kind != PointKind::Text
        {
            m.insert("unit_of_measurement".into(), u.clone().into());
        }
        if p.writable {
            m.insert(
                "command_topic".into(),
                command::set_topic(gateway, device, &p.name).into(),
            );
        }
        component_fields(&mut m, comp, p);
        m.insert("availability".into(), shared.availability.clone());
        m.insert("availability_mode".into(), "all".into());
        m.insert("device".into(), shared.device.clone());
        m.insert("origin".into(), self.origin.clone());
        Entity {
            topic: format!("{}/{comp}/{id}/config", self.prefix),
            payload: Json::Object(m),
        }
    }
}

/// The fields of Home Assistant component `comp` (the values a switch
/// sends, a number's range, ...).
fn component_fields(m: &mut serde_json::Map<String, Json>, comp: &str, p: &PointSpec) {
    match comp {
        "binary_sensor" => {
            m.insert("payload_on".into(), "ON".into());
            m.insert("payload_off".into(), "OFF".into());
        }
        "switch" => {
            m.insert("payload_on".into(), "true".into());
            m.insert("payload_off".into(), "false".into());
            m.insert("state_on".into(), "ON".into());
            m.insert("state_off".into(), "OFF".into());
        }
        "number" => {
            let (min, max, step) = match p.kind {
                PointKind::Integer { min, max } => (min, max, 1.0),
                _ => (-1e9, 1e9, 0.001),
            };
            // the point's declared write range wins over its type's
            let (lo, hi) = p.write_range;
            m.insert("min".into(), lo.unwrap_or(min).into());
            m.insert("max".into(), hi.unwrap_or(max).into());
            m.insert("step".into(), step.into());
            m.insert("mode".into(), "box".into());
        }
        "text" => {
            m.insert("command_template".into(), "{{ value | tojson }}".into());
        }
        _ => {
            if p.kind != PointKind::Text {
                m.insert("state_class".into(), "measurement".into());
            }
        }
    }
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// The topics published last time (empty when there is no file yet).
pub fn load_published(data_dir: &Path) -> Result<BTreeSet<String>, DiscoveryError> {
    let path = state_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => return Err(DiscoveryError::Read { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| DiscoveryError::Parse { path, source })
}

/// Replaces the file atomically (write beside it, then rename).
pub fn store_published(data_dir: &Path, topics: &BTreeSet<String>) -> Result<(), DiscoveryError> {
    let path = state_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(topics).unwrap_or_else(|_| "[]".into());
    let write = |p: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        std::fs::write(p, text.as_bytes())?;
        std::fs::rename(p, &path)
    };
    write(&tmp).map_err(|source| DiscoveryError::Write {
        path: path.clone(),
        source,
    })
}

fn retained(topic: String, payload: Bytes) -> Publish {
    Publish {
        topic,
        payload,
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}

/// Sends every entity's config. `false` when the publish channel is gone.
async fn send_all(out: &mpsc::Sender<Publish>, entities: &[Entity]) -> bool {
    for e in entities {
        let payload = Bytes::from(e.payload.to_string());
        if out.send(retained(e.topic.clone(), payload)).await.is_err() {
            return false;
        }
    }
    true
}

/// Removes configs published last time that are gone now, publishes the
/// current ones, records them, then re-sends on every birth message until
/// `cancel`. With `enabled: false`, only the removal runs.
pub async fn run(
    cfg: HomeAssistantConfig,
    data_dir: PathBuf,
    entities: Vec<Entity>,
    broker: Arc<dyn Watch>,
    out: mpsc::Sender<Publish>,
    cancel: CancellationToken,
) {
    let entities = if cfg.enabled { entities } else { Vec::new() };
    let birth_topic = format!("{}/status", cfg.prefix);
    // subscribe first: a birth that arrives while we publish is not missed
    let mut births = cfg.enabled.then(|| {
        broker.watch(
            "homeassistant",
            std::slice::from_ref(&birth_topic),
            BIRTH_CAPACITY,
        )
    });
    let before = load_published(&data_dir).unwrap_or_else(|e| {
        warn!(error = %e, "Home Assistant discovery: previous topics unknown, none removed");
        BTreeSet::new()
    });
    let now: BTreeSet<String> = entities.iter().map(|e| e.topic.clone()).collect();
    let gone: Vec<&String> = before.difference(&now).collect();
    for topic in &gone {
        if out
            .send(retained((*topic).clone(), Bytes::new()))
            .await
            .is_err()
        {
            return;
        }
    }
    if !send_all(&out, &entities).await {
        return;
    }
    if before != now
        && let Err(e) = store_published(&data_dir, &now)
    {
        warn!(error = %e, "Home Assistant discovery: cannot record the published topics");
    }
    info!(
        prefix = %cfg.prefix,
        entities = entities.len(),
        removed = gone.len(),
        "Home Assistant discovery published"
    );
    let Some(births) = births.as_mut() else {
        return;
    };
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = births.recv() => m,
        };
        let Some(msg) = msg else { return };
        if msg.payload.as_ref() == b"online" {
            info!(
                entities = entities.len(),
                "Home Assistant came online: discovery re-sent"
            );
            if !send_all(&out, &entities).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_topics_round_trip_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_published(dir.path()).unwrap().is_empty());
        let set: BTreeSet<String> = ["a/b/c/config".to_string()].into();
        store_published(dir.path(), &set).unwrap();
        assert_eq!(load_published(dir.path()).unwrap(), set);
    }
}
