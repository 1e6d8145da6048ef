//! The edge node's state machine, free of I/O: what to send for readings,
//! device status changes, the primary host's state and commands. Births
//! (NBIRTH, then a DBIRTH per online device) reset `seq`; every later
//! message takes the next one; DDATA carries the metrics that changed
//! (report by exception) by alias. While the primary host is offline the
//! DDATA it would send is handed out to be stored as history instead.
//!
//! Owns [`Node`], [`Phase`], [`Life`] and [`Out`]. Must not do I/O: the
//! task (`task.rs`) publishes, stores and persists bdSeq.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::commands::{self, NodeCommand, Write};
use super::encode;
use super::exception::{Exceptions, Sent};
use super::model::DeviceModel;
use super::payload::Payload;
use super::seq::Seq;
use super::topics::{CommandTopic, Ids};
use crate::reading::{Publish, Qos, Quality, Reading, Value};

/// Whether births have been sent for the current session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No births (the primary host is not online): data is stored.
    Waiting,
    /// Births sent: data is published.
    Live,
}

/// A device's life as the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Unknown,
    Online,
    Offline,
}

/// What the node asks the task to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Publish now.
    Send(Publish),
    /// Keep this DDATA (no seq yet) of `device` as history.
    Store { device: Arc<str>, payload: Payload },
    /// Write `value` to `device`'s `point` through the `.../set` path.
    Write {
        device: Arc<str>,
        point: Arc<str>,
        value: Value,
    },
}

/// Settings of the node's reporting.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub report_by_exception: bool,
    pub deadband: Option<f64>,
}

struct Device {
    model: DeviceModel,
    life: Life,
    /// The current value of each metric and its timestamp.
    values: Vec<(Sent, i64)>,
    sent: Exceptions,
    points: HashMap<Arc<str>, usize>,
}

/// The edge node.
pub struct Node {
    ids: Ids,
    reporting: Reporting,
    seq: Seq,
    bd_seq: u64,
    phase: Phase,
    devices: Vec<Device>,
    by_name: HashMap<Arc<str>, usize>,
}

impl Node {
    pub fn new(ids: Ids, models: Vec<DeviceModel>, reporting: Reporting, bd_seq: u64) -> Node {
        let devices: Vec<Device> = models
            .into_iter()
            .map(|model| Device {
                life: Life::Unknown,
                values: vec![(None, 0); model.metrics.len()],
                sent: Exceptions::new(model.metrics.len()),
                points: model
                    .metrics
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.clone(), i))
                    .collect(),
                model,
            })
            .collect();
        let by_name = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.model.name.clone(), i))
            .collect();
        Node {
            ids,
            reporting,
            seq: Seq::default(),
            bd_seq,
            phase: Phase::Waiting,
            devices,
            by_name,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn bd_seq(&self) -> u64 {
        self.bd_seq
    }

    /// The NDEATH of the current session (the clean stop's, or when the
    /// primary host goes offline).
    pub fn ndeath(&self, ts: i64) -> Publish {
        self.ndeath_with(self.bd_seq, ts)
    }

    /// The NDEATH of the session with `bd_seq` (the will registered at
    /// its CONNECT).
    pub fn ndeath_with(&self, bd_seq: u64, ts: i64) -> Publish {
        self.publish(self.ids.node_topic("NDEATH"), &encode::ndeath(bd_seq, ts))
    }

    fn publish(&self, topic: String, p: &Payload) -> Publish {
        Publish {
            topic,
            payload: Bytes::from(p.encode_to_vec()),
            qos: Qos::AtMostOnce,
            retain: false,
        }
    }

    /// Goes live with `bd_seq`: NBIRTH (seq 0), then a DBIRTH per online
    /// device with every metric's current value.
    pub fn births(&mut self, bd_seq: u64, ts: i64) -> Vec<Out> {
        self.bd_seq = bd_seq;
        self.phase = Phase::Live;
        self.seq.birth();
        let mut out = vec![Out::Send(
            self.publish(self.ids.node_topic("NBIRTH"), &encode::nbirth(bd_seq, ts)),
        )];
        for i in 0..self.devices.len() {
            if self.devices[i].life == Life::Online {
                out.push(Out::Send(self.dbirth(i, ts)));
            }
        }
        out
    }

    fn dbirth(&mut self, i: usize, ts: i64) -> Publish {
        let seq = self.seq.advance();
        let d = &mut self.devices[i];
        d.sent.clear();
        for (k, (v, _)) in d.values.iter().enumerate() {
            d.sent.record(k, v.clone());
        }
        let p = encode::dbirth(&d.model, &d.values, ts, seq);
        let topic = self.ids.device_topic("DBIRTH", &d.model.name);
        self.publish(topic, &p)
    }

    /// The primary host went offline: the NDEATH of this session, then
    /// data is stored until the next [`Node::births`].
    pub fn host_offline(&mut self, ts: i64) -> Vec<Out> {
        if self.phase == Phase::Waiting {
            return Vec::new();
        }
        self.phase = Phase::Waiting;
        vec![Out::Send(self.ndeath(ts))]
    }

    /// The connection to the broker is gone (target uplink): data is
    /// stored until the next [`Node::births`]; the broker sends the will.
    pub fn link_down(&mut self) {
        self.phase = Phase::Waiting;
    }

    /// Takes a batch of readings (one device's, in order).
    pub fn on_readings(&mut self, batch: &[Reading], now: i64) -> Vec<Out> {
        let mut out = Vec::new();
        let mut run = 0;
        while run < batch.len() {
            let device = &batch[run].device;
            let end = batch[run..]
                .iter()
                .position(|r| &r.device != device)
                .map_or(batch.len(), |n| run + n);
            if let Some(&i) = self.by_name.get(device) {
                self.device_readings(i, &batch[run..end], now, &mut out);
            }
            run = end;
        }
        out
    }

    fn device_readings(&mut self, i: usize, readings: &[Reading], now: i64, out: &mut Vec<Out>) {
        let d = &mut self.devices[i];
        let mut changed = Vec::new();
        for r in readings {
            let Some(&k) = d.points.get(&r.point) else {
                continue;
            };
            let value = (r.quality == Quality::Good).then(|| r.value.clone());
            d.values[k] = (value, r.ts);
            if !changed.contains(&k) {
                changed.push(k);
            }
        }
        let came_online =
            d.life != Life::Online && readings.iter().any(|r| r.quality == Quality::Good);
        if came_online {
            d.life = Life::Online;
            if self.phase == Phase::Live {
                out.push(Out::Send(self.dbirth(i, now)));
                return;
            }
        }
        if d.life == Life::Online {
            self.data(i, &changed, now, out);
        }
    }

    /// DDATA of the metrics among `touched` that changed (all of them
    /// without report by exception), or history while waiting.
    fn data(&mut self, i: usize, touched: &[usize], now: i64, out: &mut Vec<Out>) {
        let (rbe, deadband) = (self.reporting.report_by_exception, self.reporting.deadband);
        let d = &mut self.devices[i];
        let mut metrics = Vec::new();
        for &k in touched {
            let (value, at) = &d.values[k];
            let deadband = d.model.metrics[k].deadband.or(deadband);
            if rbe && !d.sent.changed(k, value, deadband) {
                continue;
            }
            d.sent.record(k, value.clone());
            metrics.push(encode::data_metric(&d.model.metrics[k], value, *at));
        }
        if metrics.is_empty() {
            return;
        }
        let device = d.model.name.clone();
        if self.phase == Phase::Waiting {
            let payload = encode::ddata(metrics, now, None);
            out.push(Out::Store { device, payload });
            return;
        }
        let p = encode::ddata(metrics, now, Some(self.seq.advance()));
        out.push(Out::Send(
            self.publish(self.ids.device_topic("DDATA", &device), &p),
        ));
    }

    /// A device's status changed: DDEATH when an online device goes
    /// offline, DBIRTH when it comes back (while live).
    pub fn on_status(&mut self, device: &str, online: bool, now: i64) -> Vec<Out> {
        let Some(&i) = self.by_name.get(device) else {
            return Vec::new();
        };
        let life = self.devices[i].life;
        let live = self.phase == Phase::Live;
        match (online, life) {
            (true, Life::Online) | (false, Life::Offline | Life::Unknown) => {
                if !online {
                    self.devices[i].life = Life::Offline;
                }
                Vec::new()
            }
            (true, _) => {
                self.devices[i].life = Life::Online;
                if live {
                    vec![Out::Send(self.dbirth(i, now))]
                } else {
                    Vec::new()
                }
            }
            (false, Life::Online) => {
                self.devices[i].life = Life::Offline;
                if !live {
                    return Vec::new();
                }
                let p = encode::ddeath(now, self.seq.advance());
                vec![Out::Send(
                    self.publish(self.ids.device_topic("DDEATH", device), &p),
                )]
            }
        }
    }

    /// A stored DDATA of `device`, sent now as history.
    pub fn history(&mut self, device: &str, stored: Payload) -> Publish {
        let p = encode::historical(stored, self.seq.advance());
        self.publish(self.ids.device_topic("DDATA", device), &p)
    }

    /// An NCMD or DCMD on `topic`: what to do, and the problems to log and
    /// count (a payload that is not Sparkplug, a device that does not
    /// exist, refused writes).
    pub fn on_command(&mut self, topic: &str, payload: &[u8], now: i64) -> (Vec<Out>, Vec<String>) {
        let Some(target) = self.ids.command(topic) else {
            return (Vec::new(), Vec::new());
        };
        let p = match commands::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                return (
                    Vec::new(),
                    vec![format!("{topic}: not a Sparkplug B payload: {e}")],
                );
            }
        };
        match target {
            CommandTopic::Node => match commands::node_command(&p) {
                NodeCommand::Rebirth if self.phase == Phase::Live => {
                    (self.births(self.bd_seq, now), Vec::new())
                }
                NodeCommand::Rebirth => (Vec::new(), vec!["rebirth asked while the primary host is offline; births follow when it is online".into()]),
                NodeCommand::Nothing => (Vec::new(), vec![format!("{topic}: no command the node knows")]),
            },
            CommandTopic::Device(device) => self.device_command(device, &p),
        }
    }

    fn device_command(&self, device: &str, p: &Payload) -> (Vec<Out>, Vec<String>) {
        let Some(&i) = self.by_name.get(device) else {
            return (
                Vec::new(),
                vec![format!("DCMD for unknown device {device:?}")],
            );
        };
        let d = &self.devices[i];
        let (mut out, mut refused) = (Vec::new(), Vec::new());
        for w in commands::writes(&d.model, p) {
            match w {
                Write::Accepted { point, value } => out.push(Out::Write {
                    device: d.model.name.clone(),
                    point: d.model.metrics[point].name.clone(),
                    value,
                }),
                Write::Refused { metric, reason } => {
                    refused.push(format!("DCMD {device}/{metric} refused: {reason}"))
                }
            }
        }
        (out, refused)
    }
}
