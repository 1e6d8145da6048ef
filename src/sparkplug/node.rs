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
use super::payload::{DataType, Payload};
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
    /// What a reading and a DDATA need of each metric, packed (the model's
    /// `MetricDef`s are left for births and commands).
    keys: Vec<Key>,
    /// The current value of each metric and its timestamp.
    values: Vec<(Sent, i64)>,
    sent: Exceptions,
    points: HashMap<Arc<str>, usize>,
    /// Where the next reading's metric probably is: the one after the
    /// previous reading's (a poll's readings come in the same order).
    hint: usize,
}

/// One metric as every reading and every DDATA touch it: 48 bytes beside
/// each other for the metrics of a device, where its `MetricDef` (name,
/// unit, scale and all) is about twice that. A poll of a device comes
/// 100 ms after the last, when nothing of it is in the caches.
struct Key {
    /// The point's name; once a reading matched it by name, the reading's
    /// own allocation, so the next polls match by pointer.
    name: Arc<str>,
    alias: u64,
    /// The point's own deadband, else the node's.
    deadband: Option<f64>,
    datatype: DataType,
    /// Already among the current batch's touched metrics (`false` between
    /// batches).
    seen: bool,
}

impl Device {
    fn new(model: DeviceModel, node_deadband: Option<f64>) -> Device {
        let keys = model
            .metrics
            .iter()
            .map(|m| Key {
                name: m.name.clone(),
                alias: m.alias,
                deadband: m.deadband.or(node_deadband),
                datatype: m.datatype,
                seen: false,
            })
            .collect();
        Device {
            life: Life::Unknown,
            keys,
            values: vec![(None, 0); model.metrics.len()],
            sent: Exceptions::new(model.metrics.len()),
            points: model
                .metrics
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect(),
            hint: 0,
            model,
        }
    }

    /// The metric of `point`: at the hint when it is there (by pointer or
    /// by name; past the last metric the hint is the first), else by name.
    fn metric(&self, point: &Arc<str>) -> Option<usize> {
        let at = if self.hint < self.keys.len() {
            self.hint
        } else {
            0
        };
        match self.keys.get(at) {
            Some(k) if Arc::ptr_eq(&k.name, point) || *k.name == **point => Some(at),
            _ => self.points.get(point).copied(),
        }
    }
}

/// A message the node sends (QoS 0, not retained: Sparkplug's rule for
/// everything but NDEATH as a will and STATE).
fn qos0(topic: String, payload: Vec<u8>) -> Publish {
    Publish {
        topic,
        payload: Bytes::from(payload),
        qos: Qos::AtMostOnce,
        retain: false,
    }
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
            .map(|model| Device::new(model, reporting.deadband))
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
        qos0(topic, p.encode_to_vec())
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
        for run in batch.chunk_by(Reading::same_device) {
            if let Some(&i) = self.by_name.get(&run[0].device) {
                self.device_readings(i, run, now, &mut out);
            }
        }
        out
    }

    fn device_readings(&mut self, i: usize, readings: &[Reading], now: i64, out: &mut Vec<Out>) {
        let rbe = self.reporting.report_by_exception;
        let d = &mut self.devices[i];
        // the metrics touched, each once, in the order they first came
        // (with report by exception, those whose value moved)
        let mut changed = Vec::with_capacity(readings.len().min(d.keys.len()));
        for r in readings {
            let Some(k) = d.metric(&r.point) else {
                continue;
            };
            let key = &mut d.keys[k];
            if !Arc::ptr_eq(&key.name, &r.point) {
                // the same name in the reading's allocation: found by
                // pointer from the next batch on
                key.name = r.point.clone();
            }
            d.hint = k + 1;
            let value = (r.quality == Quality::Good).then(|| r.value.clone());
            let current = &mut d.values[k];
            // the value the metric holds: with report by exception no
            // exception, whatever was last sent (it was weighed against
            // that when it came, or a birth sent it), and what was sent
            // need not be looked at
            let moved = !rbe || current.0 != value;
            *current = (value, r.ts);
            if moved && !std::mem::replace(&mut key.seen, true) {
                changed.push(k);
            }
        }
        for &k in &changed {
            d.keys[k].seen = false;
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
        let rbe = self.reporting.report_by_exception;
        let d = &mut self.devices[i];
        // the metrics to send, in the order touched
        let mut chosen = Vec::with_capacity(touched.len());
        for &k in touched {
            if rbe {
                // what was sent is kept for report by exception only
                let value = &d.values[k].0;
                if !d.sent.changed(k, value, d.keys[k].deadband) {
                    continue;
                }
                d.sent.record(k, value.clone());
            }
            chosen.push(k);
        }
        if chosen.is_empty() {
            return;
        }
        if self.phase == Phase::Waiting {
            let metrics = chosen
                .iter()
                .map(|&k| encode::data_metric(&d.model.metrics[k], &d.values[k].0, d.values[k].1))
                .collect();
            let payload = encode::ddata(metrics, now, None);
            let device = d.model.name.clone();
            out.push(Out::Store { device, payload });
            return;
        }
        let metrics = chosen.iter().map(|&k| {
            let (key, (value, at)) = (&d.keys[k], &d.values[k]);
            (key.alias, key.datatype, value, *at)
        });
        let bytes = super::wire::ddata_bytes(metrics, now, self.seq.advance());
        let topic = self.ids.device_topic("DDATA", &d.model.name);
        out.push(Out::Send(qos0(topic, bytes)));
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

/// The state machine without I/O: births, seq, report by exception,
/// device deaths and rebirths, history while the host is away.
#[cfg(test)]
mod tests {
    use prost::Message;

    use super::{Node, Out, Phase, Reporting};
    use crate::reading::{Quality, Reading, Value};
    use crate::sparkplug::model::{DeviceModel, MetricDef};
    use crate::sparkplug::payload::{DataType, MetricValue, Payload};
    use crate::sparkplug::topics::Ids;

    fn node(rbe: bool, deadband: Option<f64>) -> Node {
        node_with(rbe, deadband, None)
    }

    /// `b_deadband`: the point `b`'s own deadband.
    fn node_with(rbe: bool, deadband: Option<f64>, b_deadband: Option<f64>) -> Node {
        let def = |name: &str, alias| MetricDef {
            name: name.into(),
            alias,
            datatype: DataType::Double,
            unit: None,
            scale: None,
            writable: false,
            deadband: None,
        };
        let model = DeviceModel {
            name: "plc".into(),
            metrics: vec![
                def("a", 2),
                MetricDef {
                    deadband: b_deadband,
                    ..def("b", 3)
                },
            ],
        };
        let ids = Ids {
            group: "g".into(),
            node: "n".into(),
        };
        let reporting = Reporting {
            report_by_exception: rbe,
            deadband,
        };
        Node::new(ids, vec![model], reporting, 7)
    }

    fn reading(point: &str, v: f64, ts: i64) -> Reading {
        Reading {
            device: "plc".into(),
            point: point.into(),
            value: Value::Float(v),
            unit: None,
            ts,
            quality: Quality::Good,
        }
    }

    /// (topic, decoded payload) of every `Send`.
    fn sent(out: &[Out]) -> Vec<(String, Payload)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send(p) => {
                    Some((p.topic.clone(), Payload::decode(p.payload.clone()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn what_a_reading_touches_of_a_metric_is_48_bytes() {
        assert_eq!(size_of::<super::Key>(), 48);
    }

    #[test]
    fn births_then_data_by_exception_with_seq_in_order() {
        let mut n = node(true, Some(0.5));
        let b = sent(&n.births(7, 1));
        assert_eq!(b.len(), 1, "no device born before its first reading");
        assert_eq!(b[0].0, "spBv1.0/g/NBIRTH/n");
        assert_eq!(b[0].1.seq, Some(0));
        let first = sent(&n.on_readings(&[reading("a", 1.0, 10), reading("b", 2.0, 10)], 11));
        assert_eq!(first[0].0, "spBv1.0/g/DBIRTH/n/plc");
        assert_eq!(first[0].1.seq, Some(1));
        assert_eq!(first[0].1.metrics.len(), 2);
        // a within the deadband, b past it: one metric, by alias
        let d = sent(&n.on_readings(&[reading("a", 1.4, 20), reading("b", 3.0, 20)], 21));
        assert_eq!(d[0].0, "spBv1.0/g/DDATA/n/plc");
        assert_eq!(d[0].1.seq, Some(2));
        let m = &d[0].1.metrics;
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].name.as_deref(), m[0].alias), (None, Some(3)));
        assert_eq!(m[0].value, Some(MetricValue::DoubleValue(3.0)));
        assert_eq!(m[0].timestamp, Some(20));
        // nothing changed: nothing sent
        assert!(n.on_readings(&[reading("b", 3.0, 30)], 31).is_empty());
        // a stays within the deadband of what it last sent (1.0), again
        // and again; once past it, it goes; then the same value is no news
        for (v, at) in [(1.4, 40), (1.4, 50), (1.3, 60)] {
            assert!(n.on_readings(&[reading("a", v, at)], at + 1).is_empty());
        }
        let d = sent(&n.on_readings(&[reading("a", 1.6, 70)], 71));
        assert_eq!(d[0].1.metrics[0].value, Some(MetricValue::DoubleValue(1.6)));
        assert!(n.on_readings(&[reading("a", 1.6, 80)], 81).is_empty());
        // a bad reading is news, and a good one after it
        let bad = Reading {
            quality: Quality::Bad,
            ..reading("a", 1.6, 90)
        };
        let d = sent(&n.on_readings(std::slice::from_ref(&bad), 91));
        assert_eq!(d[0].1.metrics[0].is_null, Some(true));
        assert!(n.on_readings(&[bad], 101).is_empty());
        let d = sent(&n.on_readings(&[reading("a", 1.6, 110)], 111));
        assert_eq!(d[0].1.metrics[0].value, Some(MetricValue::DoubleValue(1.6)));
    }

    #[test]
    fn without_report_by_exception_every_reading_is_sent() {
        let mut n = node(false, None);
        n.births(7, 1);
        n.on_readings(&[reading("a", 1.0, 10)], 11);
        let d = sent(&n.on_readings(&[reading("a", 1.0, 20), reading("b", 1.0, 20)], 21));
        assert_eq!(d[0].1.metrics.len(), 2);
    }

    #[test]
    fn seq_wraps_after_255_across_message_types() {
        let mut n = node(false, None);
        n.births(7, 1);
        let mut seqs = Vec::new();
        for i in 0..300 {
            let out = if i % 50 == 49 {
                n.on_status("plc", false, i)
            } else {
                n.on_readings(&[reading("a", i as f64, i)], i)
            };
            seqs.extend(sent(&out).into_iter().map(|(_, p)| p.seq.unwrap()));
        }
        assert_eq!(seqs.len(), 300);
        for (k, s) in seqs.iter().enumerate() {
            assert_eq!(*s, ((k + 1) % 256) as u64, "message {k}");
        }
    }

    #[test]
    fn a_device_dies_and_is_born_again_with_every_metric() {
        let mut n = node(true, None);
        n.births(7, 1);
        n.on_readings(&[reading("a", 1.0, 10)], 11);
        let death = sent(&n.on_status("plc", false, 12));
        assert_eq!(death[0].0, "spBv1.0/g/DDEATH/n/plc");
        assert!(death[0].1.metrics.is_empty());
        assert!(n.on_status("plc", false, 13).is_empty(), "one death only");
        let birth = sent(&n.on_readings(&[reading("a", 1.0, 20)], 21));
        assert_eq!(birth[0].0, "spBv1.0/g/DBIRTH/n/plc");
        let m = &birth[0].1.metrics;
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].is_null, Some(true), "b never read: null in the birth");
    }

    #[test]
    fn while_the_host_is_away_data_is_stored_and_births_come_first_after() {
        let mut n = node(true, None);
        n.births(7, 1);
        n.on_readings(&[reading("a", 1.0, 10)], 11);
        let off = sent(&n.host_offline(12));
        assert_eq!(off[0].0, "spBv1.0/g/NDEATH/n");
        assert_eq!(off[0].1.seq, None);
        assert_eq!(n.phase(), Phase::Waiting);
        let out = n.on_readings(&[reading("a", 2.0, 20)], 21);
        let Out::Store { device, payload } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(&**device, "plc");
        assert_eq!(payload.seq, None);
        assert_eq!(payload.metrics[0].timestamp, Some(20));
        let stored = payload.clone();
        let births = sent(&n.births(8, 30));
        assert_eq!(
            births[0].1.metrics[0].value,
            Some(MetricValue::LongValue(8))
        );
        assert_eq!(births[1].0, "spBv1.0/g/DBIRTH/n/plc");
        let h = n.history("plc", stored);
        let h = Payload::decode(h.payload).unwrap();
        assert_eq!(h.seq, Some(2));
        assert_eq!(h.metrics[0].is_historical, Some(true));
        assert_eq!(h.metrics[0].timestamp, Some(20));
    }

    #[test]
    fn a_rebirth_command_sends_every_birth_again() {
        let mut n = node(true, None);
        n.births(7, 1);
        n.on_readings(&[reading("a", 1.0, 10)], 11);
        let cmd = Payload {
            metrics: vec![crate::sparkplug::payload::Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(MetricValue::BooleanValue(true)),
                ..Default::default()
            }],
            ..Payload::default()
        };
        let (out, problems) = n.on_command("spBv1.0/g/NCMD/n", &cmd.encode_to_vec(), 20);
        assert!(problems.is_empty());
        let s = sent(&out);
        let topics: Vec<&str> = s.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["spBv1.0/g/NBIRTH/n", "spBv1.0/g/DBIRTH/n/plc"]);
        assert_eq!(
            s[0].1.metrics[0].value,
            Some(MetricValue::LongValue(7)),
            "same bdSeq"
        );
        let (_, problems) = n.on_command("spBv1.0/g/DCMD/n/plc", &cmd.encode_to_vec(), 21);
        assert!(problems[0].contains("no such metric"), "{problems:?}");
    }

    #[test]
    fn a_points_own_deadband_overrides_the_nodes() {
        let mut n = node_with(true, Some(0.5), Some(5.0));
        n.births(7, 1);
        n.on_readings(&[reading("a", 0.0, 10), reading("b", 0.0, 10)], 11);
        let d = sent(&n.on_readings(&[reading("a", 1.0, 20), reading("b", 4.0, 20)], 21));
        let aliases: Vec<u64> = d[0].1.metrics.iter().map(|m| m.alias.unwrap()).collect();
        assert_eq!(aliases, [2], "b moved 4 within its own deadband of 5");
        let d = sent(&n.on_readings(&[reading("b", 6.0, 30)], 31));
        assert_eq!(d[0].1.metrics[0].alias, Some(3));
    }
}
