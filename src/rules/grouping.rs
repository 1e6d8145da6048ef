//! The per-device payload (`rules.payload: per_device`, docs/design.md):
//! one device's readings of one poll become one message on the device
//! topic (`mapping::device_template`), every point with its value, unit,
//! ts and quality, in the order the points are configured:
//! `{"device":"boiler","ts":…,"points":{"temperature":{"value":21.5,"unit":"°C","ts":…,"quality":"good"},…}}`.
//!
//! When a poll is over: the readings channel carries one batch per device
//! reply, not one per poll, so a device's group is published as soon as
//! it holds every point expected of the device (its configured points,
//! and points it reported before that are not configured, as a serial
//! decoder's); or, when some are missing (a failed read), when a point
//! arrives a second time (the next poll began) or `grace` after the
//! group's first reading (the device's poll interval; 1 s for devices
//! without one), whichever comes first. A configured point with no
//! reading in the poll is listed with `"value": null` and quality `bad`.
//!
//! Bounded: at most [`MAX_POINTS`] point names per device; a reading of
//! a further name is left to the per-point mapping (never dropped).
//!
//! Owns the groups and the payload's shape. Must not run scripts, block
//! or touch channels: the engine calls it, the stage worker asks it for
//! its next deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod frame;

use frame::{Frame, Tail};

use super::TopicTemplate;
use crate::ports::points::DeviceSpec;
use crate::reading::{Publish, Qos, Quality, Reading, Value, clock, write_unit, write_value};

/// Point names one device's group holds at most.
pub const MAX_POINTS: usize = 4096;
/// How long a group of a device with no poll interval waits for missing points.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// One point's reading in the group.
struct Slot {
    value: Value,
    unit: SlotUnit,
    ts: i64,
    quality: Quality,
}

/// A held reading's unit: most often the one its point's [`Frame`] bytes
/// were written for (no copy of the unit kept).
enum SlotUnit {
    AsWritten,
    Other(Option<Arc<str>>),
}

/// One device: its expected points and the readings of the poll under way.
struct Group {
    device: Arc<str>,
    topic: String,
    /// The payload's start, `{"device":"…","ts":`, written once.
    head: Box<[u8]>,
    /// Expected points in message order: the configured ones first.
    names: Vec<Arc<str>>,
    /// Each point's bytes that do not change from poll to poll.
    frame: Frame,
    /// Configured units (for points listed as bad).
    units: Vec<Option<Arc<str>>>,
    /// `names[..configured]` come from the config: listed as bad when missing.
    configured: usize,
    index: HashMap<Arc<str>, usize>,
    /// Where the next reading's point probably is: the place after the
    /// previous one's (a poll's readings come in the same order each time).
    hint: usize,
    pending: Vec<Option<Slot>>,
    held: usize,
    /// A point was learned during this poll: the expected set is not
    /// known yet, so the group waits for a repeat or its deadline.
    learning: bool,
    grace: Duration,
    /// When the group's first reading came (`None`: empty).
    since: Option<Instant>,
    /// Size of the last payload, to size the next one.
    last_len: usize,
}

impl Group {
    fn new(device: Arc<str>, topic: String, grace: Duration) -> Self {
        let mut head = b"{\"device\":".to_vec();
        // writing a str to a Vec cannot fail
        let _ = serde_json::to_writer(&mut head, &*device);
        head.extend_from_slice(b",\"ts\":");
        Group {
            device,
            topic,
            head: head.into(),
            names: Vec::new(),
            frame: Frame::default(),
            units: Vec::new(),
            configured: 0,
            index: HashMap::new(),
            hint: 0,
            pending: Vec::new(),
            held: 0,
            learning: false,
            grace,
            since: None,
            last_len: 256,
        }
    }

    fn add_point(&mut self, name: Arc<str>, unit: Option<Arc<str>>) -> usize {
        let i = self.names.len();
        self.frame.push(&name, unit.clone());
        self.index.insert(name.clone(), i);
        self.names.push(name);
        self.units.push(unit);
        self.pending.push(None);
        i
    }

    /// The place of `point`: at the hint when it is there (by pointer or
    /// by name; past the last point the hint is the first), else by name.
    fn find(&self, point: &Arc<str>) -> Option<usize> {
        let at = if self.hint < self.names.len() {
            self.hint
        } else {
            0
        };
        match self.names.get(at) {
            Some(n) if Arc::ptr_eq(n, point) || **n == **point => Some(at),
            _ => self.index.get(&**point).copied(),
        }
    }

    fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + self.grace)
    }

    /// Adds `r`, a reading of this group's device, as
    /// [`Grouping::push`] says.
    fn push(&mut self, r: &Reading, (qos, retain): (Qos, bool), out: &mut Vec<Publish>) -> bool {
        if !Arc::ptr_eq(&self.device, &r.device) {
            // as for points below: found by pointer from now on
            self.device = r.device.clone();
        }
        let i = match self.find(&r.point) {
            Some(i) => {
                // the same name in the reading's allocation: found by
                // pointer from the next poll on
                if !Arc::ptr_eq(&self.names[i], &r.point) {
                    self.names[i] = r.point.clone();
                }
                i
            }
            None if self.names.len() < MAX_POINTS => {
                self.learning = true;
                self.add_point(r.point.clone(), None)
            }
            None => return false,
        };
        if self.pending[i].is_some() {
            // the point again: the next poll began
            out.push(self.flush(qos, retain));
        }
        let unit = if self.frame.names(i, &r.unit) {
            SlotUnit::AsWritten
        } else {
            SlotUnit::Other(r.unit.clone())
        };
        self.pending[i] = Some(Slot {
            value: r.value.clone(),
            unit,
            ts: r.ts,
            quality: r.quality,
        });
        self.held += 1;
        self.hint = i + 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        if self.held == self.names.len() && !self.learning {
            out.push(self.flush(qos, retain));
        }
        true
    }

    /// Writes the group's message and empties it.
    fn flush(&mut self, qos: Qos, retain: bool) -> Publish {
        let ts = self
            .pending
            .iter()
            .flatten()
            .map(|s| s.ts)
            .max()
            .unwrap_or(0);
        // room for the last payload and some growth (a longer value or a
        // new point): a grown Vec would copy the whole payload
        let mut out = Vec::with_capacity(self.last_len + self.last_len / 16 + 64);
        out.extend_from_slice(&self.head);
        // writing an integer to a Vec cannot fail
        let _ = serde_json::to_writer(&mut out, &ts);
        // taken before NTP set the clock: `ts` may be far off
        if !clock::synced(ts) {
            out.extend_from_slice(b",\"clock\":\"unsynced\"");
        }
        out.extend_from_slice(b",\"points\":{");
        let mut first = true;
        let mut tail = Tail::default();
        for (i, slot) in self.pending.iter_mut().enumerate() {
            let slot = slot.take();
            if slot.is_none() && i >= self.configured {
                continue;
            }
            // the bytes of `write_fields`, with the parts that do not
            // change from poll to poll written once
            let head = self.frame.head(i);
            out.extend_from_slice(if first { &head[1..] } else { head });
            first = false;
            match slot {
                Some(s) => {
                    write_value(&mut out, Some(&s.value));
                    if let SlotUnit::Other(unit) = s.unit {
                        self.frame.set_unit(i, unit);
                    }
                    let unit = self.frame.unit(i);
                    if !unit.is_empty() {
                        out.extend_from_slice(unit);
                    }
                    tail.write(&mut out, s.ts, s.quality);
                }
                None => {
                    write_value(&mut out, None);
                    write_unit(&mut out, self.units[i].as_deref());
                    tail.write(&mut out, ts, Quality::Bad);
                }
            }
        }
        out.extend_from_slice(b"}}");
        self.last_len = out.len();
        self.held = 0;
        self.learning = false;
        self.since = None;
        Publish {
            topic: self.topic.clone(),
            payload: Bytes::from(out),
            qos,
            retain,
        }
    }
}

/// Every device's group.
pub struct Grouping {
    gateway: String,
    topic: TopicTemplate,
    qos: Qos,
    retain: bool,
    groups: Vec<Group>,
    by_device: HashMap<Arc<str>, usize>,
    /// The group of the previous reading (readings come in device batches).
    last: usize,
}

impl Grouping {
    /// Groups published on `device_template` (see `mapping::device_template`).
    pub fn new(gateway: &str, device_template: &str, qos: Qos, retain: bool) -> Self {
        Grouping {
            gateway: gateway.to_string(),
            topic: TopicTemplate::parse(device_template),
            qos,
            retain,
            groups: Vec::new(),
            by_device: HashMap::new(),
            last: 0,
        }
    }

    /// Declares the configured devices: their points are expected in
    /// every poll (listed as bad when missing), in this order.
    pub fn set_devices(&mut self, devices: &[DeviceSpec]) {
        for d in devices {
            let i = self.group_of(&d.name);
            let g = &mut self.groups[i];
            if let Some(poll) = d.poll {
                g.grace = poll;
            }
            for p in &d.points {
                if !g.index.contains_key(p.name.as_str()) {
                    g.add_point(p.name.as_str().into(), p.unit.as_deref().map(Arc::from));
                }
            }
            g.configured = g.names.len();
        }
    }

    fn group_of(&mut self, device: &str) -> usize {
        if let Some(g) = self.groups.get(self.last)
            && (std::ptr::eq(g.device.as_ptr(), device.as_ptr()) && g.device.len() == device.len()
                || *g.device == *device)
        {
            return self.last;
        }
        let i = match self.by_device.get(device) {
            Some(i) => *i,
            None => {
                let device: Arc<str> = device.into();
                let topic = self.topic.render(&self.gateway, &device, "");
                self.groups
                    .push(Group::new(device.clone(), topic, DEFAULT_GRACE));
                self.by_device.insert(device, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.last = i;
        i
    }

    /// Adds `r` to its device's group, appending to `out` the messages
    /// this completes. Returns `false` when the device already has
    /// [`MAX_POINTS`] other points: `r` was not taken.
    pub fn push(&mut self, r: &Reading, out: &mut Vec<Publish>) -> bool {
        let (qos, retain) = (self.qos, self.retain);
        let g = self.group_of(&r.device);
        self.groups[g].push(r, (qos, retain), out)
    }

    /// [`Grouping::push`] of a run of readings of one device (a poll's
    /// reply: its group is looked up once); `refused` gets each reading
    /// that was not taken.
    pub fn push_run(
        &mut self,
        run: &[Reading],
        out: &mut Vec<Publish>,
        mut refused: impl FnMut(&Reading),
    ) {
        let Some(first) = run.first() else {
            return;
        };
        let (qos, retain) = (self.qos, self.retain);
        let g = self.group_of(&first.device);
        let g = &mut self.groups[g];
        for r in run {
            if !g.push(r, (qos, retain), out) {
                refused(r);
            }
        }
    }

    /// The earliest deadline of a group still waiting for points.
    pub fn next_due(&self) -> Option<Instant> {
        self.groups.iter().filter_map(Group::due).min()
    }

    /// Publishes the groups whose deadline is at or before `now`.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Publish>) {
        for g in &mut self.groups {
            if g.due().is_some_and(|d| d <= now) {
                out.push(g.flush(self.qos, self.retain));
            }
        }
    }

    /// Publishes every group that holds readings (at the stage's end).
    pub fn flush_all(&mut self, out: &mut Vec<Publish>) {
        for g in &mut self.groups {
            if g.held > 0 {
                out.push(g.flush(self.qos, self.retain));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Tests of `payload: per_device` (`grouping.rs`) through the engine: the
    //! exact message, when a poll's group is published, missing points.

    use std::time::{Duration, Instant};

    use crate::ports::points::{DeviceSpec, PointKind, PointSpec};
    use crate::reading::{Quality, Value, clock};
    use crate::rules::*;

    fn spec(device: &str, points: &[(&str, Option<&str>)], poll: Duration) -> DeviceSpec {
        DeviceSpec {
            name: device.to_string(),
            kind: "modbus-tcp",
            poll: Some(poll),
            points: points
                .iter()
                .map(|(n, u)| PointSpec {
                    name: n.to_string(),
                    unit: u.map(str::to_string),
                    kind: PointKind::Float,
                    writable: false,
                    write_range: (None, None),
                    scale: None,
                    deadband: None,
                })
                .collect(),
        }
    }

    fn reading(device: &str, point: &str, value: Value, unit: Option<&str>, ts: i64) -> Reading {
        Reading {
            unit: unit.map(Into::into),
            ..crate::rules::tests::reading(device, point, value, ts)
        }
    }

    fn per_device(topic: &str, devices: &[DeviceSpec]) -> RulesEngine {
        let cfg = RulesConfig {
            topic: topic.to_string(),
            payload: Payload::PerDevice,
            ..RulesConfig::default()
        };
        let (mut e, errors) = RulesEngine::new("gw", &cfg, Vec::new());
        assert!(errors.is_empty());
        e.set_devices(devices);
        e
    }

    fn feed(e: &mut RulesEngine, rs: &[Reading]) -> Vec<Publish> {
        let mut out = Vec::new();
        for r in rs {
            assert!(e.process(r, &mut out).is_empty());
        }
        out
    }

    #[test]
    fn a_batch_in_one_call_publishes_what_reading_by_reading_does() {
        clock::set_check(false);
        let poll = Duration::from_secs(60);
        let devices = [
            spec("a", &[("x", Some("V")), ("y", None)], poll),
            spec("b", &[("x", None)], poll),
        ];
        let (mut one, mut each) = (
            per_device("{gateway}/{device}", &devices),
            per_device("{gateway}/{device}", &devices),
        );
        // runs of two devices, a learned point, a point over MAX_POINTS
        let mut batch = vec![
            reading("a", "x", Value::Int(1), Some("V"), 5),
            reading("b", "x", Value::Float(2.5), None, 5),
            reading("a", "y", Value::Bool(true), None, 6),
            reading("a", "z", Value::String("new".into()), Some("A"), 6),
            reading("a", "x", Value::Int(3), Some("kV"), 7),
        ];
        for i in 0..super::MAX_POINTS {
            batch.push(reading(
                "b",
                &format!("p{i}"),
                Value::Int(i as i64),
                None,
                8,
            ));
        }
        let mut by_batch = Vec::new();
        assert!(one.process_unscripted(&batch, &mut by_batch));
        let mut by_reading = feed(&mut each, &batch);
        assert!(by_batch.len() >= 3, "{} messages", by_batch.len());
        // the same messages; those of points over MAX_POINTS may come
        // after their run's group messages
        let key = |p: &Publish| (p.topic.clone(), p.payload.clone());
        by_batch.sort_by_key(key);
        by_reading.sort_by_key(key);
        assert_eq!(by_batch, by_reading);
        let (mut rest_one, mut rest_each) = (Vec::new(), Vec::new());
        one.flush_all(&mut rest_one);
        each.flush_all(&mut rest_each);
        assert_eq!(rest_one, rest_each);
    }

    #[test]
    fn a_complete_poll_is_one_message_with_every_point_in_configured_order() {
        clock::set_check(false);
        let boiler = spec(
            "boiler",
            &[("temp", Some("°C")), ("pump", None), ("label", None)],
            Duration::from_secs(1),
        );
        let mut e = per_device("{gateway}/{device}/{point}", &[boiler]);
        // replies come in request order, not config order
        let out = feed(
            &mut e,
            &[
                reading("boiler", "pump", Value::Bool(true), None, 10),
                reading("boiler", "label", Value::String("P\"7".into()), None, 10),
            ],
        );
        assert!(out.is_empty(), "published before the poll was complete");
        let out = feed(
            &mut e,
            &[reading(
                "boiler",
                "temp",
                Value::Float(21.5),
                Some("°C"),
                12,
            )],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "gw/boiler");
        assert_eq!(
            std::str::from_utf8(&out[0].payload).unwrap(),
            r#"{"device":"boiler","ts":12,"points":{"temp":{"value":21.5,"unit":"°C","ts":12,"quality":"good"},"pump":{"value":true,"ts":10,"quality":"good"},"label":{"value":"P\"7","ts":10,"quality":"good"}}}"#
        );
        assert_eq!(out[0].qos, Qos::AtLeastOnce);
        assert!(!out[0].retain);
        assert!(e.next_flush().is_none(), "nothing left waiting");
    }

    #[test]
    fn a_point_missing_from_a_poll_is_listed_bad_when_the_next_poll_begins() {
        clock::set_check(false);
        let dev = spec(
            "d",
            &[("a", Some("V")), ("b", Some("A"))],
            Duration::from_secs(60),
        );
        let mut e = per_device("{gateway}/{device}/{point}", &[dev]);
        assert!(feed(&mut e, &[reading("d", "a", Value::Int(1), Some("V"), 5)]).is_empty());
        assert!(e.next_flush().is_some(), "the group waits with a deadline");
        // `a` again: the poll of ts 5 is over, without `b`
        let out = feed(&mut e, &[reading("d", "a", Value::Int(2), Some("V"), 6)]);
        assert_eq!(out.len(), 1);
        let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"device": "d", "ts": 5, "points": {
                "a": {"value": 1, "unit": "V", "ts": 5, "quality": "good"},
                "b": {"value": null, "unit": "A", "ts": 5, "quality": "bad"},
            }})
        );
    }

    #[test]
    fn each_point_reads_as_its_per_point_payload_whatever_its_unit_ts_and_quality() {
        clock::set_check(false);
        let dev = spec(
            "d",
            &[("a", Some("°C")), ("b", None), ("c", Some("V"))],
            Duration::from_secs(60),
        );
        let mut e = per_device("{gateway}/{device}/{point}", &[dev]);
        // polls where units change (to another, to none, back), the ts
        // differs between points and the quality changes
        let units = [Some("°C"), Some("K"), None, Some("°C"), Some("\"q\"")];
        let qualities = [Quality::Good, Quality::Stale, Quality::Bad];
        for poll in 0..15_i64 {
            let rs: Vec<Reading> = ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let k = poll as usize + i;
                    Reading {
                        quality: qualities[k % 3],
                        ..reading(
                            "d",
                            p,
                            Value::Float(poll as f64 / 3.0),
                            units[k % units.len()],
                            1_000 + poll * 10 + (k % 2) as i64,
                        )
                    }
                })
                .collect();
            let out = feed(&mut e, &rs);
            assert_eq!(out.len(), 1, "poll {poll}: one message");
            let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
            for r in &rs {
                let alone: serde_json::Value = serde_json::from_slice(&r.to_payload()).unwrap();
                assert_eq!(
                    m["points"][&*r.point], alone,
                    "poll {poll}, point {}",
                    r.point
                );
            }
        }
    }

    #[test]
    fn an_incomplete_group_is_published_at_its_deadline_and_at_the_end() {
        clock::set_check(false);
        let dev = spec("d", &[("a", None), ("b", None)], Duration::from_millis(100));
        let mut e = per_device("{gateway}/{device}/{point}", &[dev]);
        let start = Instant::now();
        assert!(feed(&mut e, &[reading("d", "a", Value::Int(1), None, 5)]).is_empty());
        let due = e.next_flush().expect("a deadline");
        assert!(
            due >= start + Duration::from_millis(100),
            "the grace is the poll interval"
        );
        let mut out = Vec::new();
        e.flush_due(due - Duration::from_millis(1), &mut out);
        assert!(out.is_empty(), "published before its deadline");
        e.flush_due(due, &mut out);
        assert_eq!(out.len(), 1);
        let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(m["points"]["b"]["quality"], "bad");
        assert!(e.next_flush().is_none());
        // the stage's end publishes what is left
        assert!(feed(&mut e, &[reading("d", "b", Value::Int(3), None, 9)]).is_empty());
        let mut out = Vec::new();
        e.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        let m: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(m["points"]["a"]["quality"], "bad");
        assert_eq!(m["points"]["b"]["value"], 3);
    }

    #[test]
    fn unconfigured_devices_learn_their_points_then_group_by_poll() {
        clock::set_check(false);
        let mut e = per_device("site/{gateway}/{device}-{point}/v", &[]);
        let poll = |v: i64| {
            [
                reading("s", "x", Value::Int(v), None, v),
                reading("s", "y", Value::Int(v), None, v),
            ]
        };
        // first poll: the points are not known yet, the repeat ends it
        assert!(feed(&mut e, &poll(1)).is_empty());
        let out = feed(&mut e, &poll(2));
        assert_eq!(out.len(), 2, "poll 1 at the repeat, poll 2 once complete");
        assert_eq!(out[0].topic, "site/gw/s");
        for (m, v) in out.iter().zip([1, 2]) {
            let m: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m["points"]["x"]["value"], v);
            assert_eq!(m["points"]["y"]["value"], v);
        }
    }

    #[test]
    fn devices_are_grouped_apart_and_per_point_is_unchanged() {
        clock::set_check(false);
        let devices = [
            spec("a", &[("p", None)], Duration::from_secs(1)),
            spec("b", &[("p", None)], Duration::from_secs(1)),
        ];
        let mut e = per_device("{gateway}/{device}/{point}", &devices);
        let out = feed(
            &mut e,
            &[
                reading("a", "p", Value::Int(1), None, 1),
                reading("b", "p", Value::Int(2), None, 1),
            ],
        );
        let topics: Vec<_> = out.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["gw/a", "gw/b"]);

        let (mut e, _) = RulesEngine::new("gw", &RulesConfig::default(), Vec::new());
        e.set_devices(&devices);
        let out = feed(&mut e, &[reading("a", "p", Value::Int(1), None, 1)]);
        assert_eq!(out[0].topic, "gw/a/p");
        assert_eq!(
            &out[0].payload[..],
            br#"{"value":1,"ts":1,"quality":"good"}"#
        );
    }

    #[test]
    fn scripts_publish_per_reading_whatever_the_payload_setting() {
        let (_dir, path) = crate::rules::tests::script("fn on_reading(r) { emit(r); }");
        let cfg = RulesConfig {
            scripts: vec![path.clone()],
            payload: Payload::PerDevice,
            ..RulesConfig::default()
        };
        assert!(!cfg.groups_by_device());
        let (mut e, errors) = RulesEngine::new("gw", &cfg, vec![path]);
        assert!(errors.is_empty());
        let out = feed(&mut e, &[reading("a", "p", Value::Int(1), None, 1)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "gw/a/p");
    }

    #[test]
    fn payload_values_other_than_the_three_are_config_errors() {
        let path = std::path::Path::new("/tmp/fieldgate.yaml");
        let Err(err) =
            crate::settings::parse("gateway:\n  id: gw\nrules:\n  payload: per_devices\n", path)
        else {
            panic!("an unknown payload was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("rules.payload"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let cfg =
            crate::settings::parse("gateway:\n  id: gw\nrules:\n  payload: per_device\n", path)
                .expect("valid");
        assert_eq!(cfg.rules.payload, Payload::PerDevice);
        let cfg = crate::settings::parse("gateway:\n  id: gw\nrules:\n  payload: none\n", path)
            .expect("valid");
        assert_eq!(cfg.rules.payload, Payload::None);
    }

    #[test]
    fn rules_test_shows_the_grouped_messages() {
        let cfg = RulesConfig {
            payload: Payload::PerDevice,
            ..RulesConfig::default()
        };
        let readings = ["d/a=1", "d/b=2 V", "d/a=3"].map(String::from);
        let report = crate::rules::cli::test(
            "gw",
            &cfg,
            std::path::Path::new("/tmp/fieldgate.yaml"),
            &readings,
            Duration::from_secs(1),
        )
        .expect("runs");
        let text = report.text;
        assert_eq!(text.matches("publish gw/d qos=1").count(), 2, "{text}");
        assert!(text.contains("(held for its device's message"), "{text}");
        assert!(text.contains("end of readings (per_device"), "{text}");
        assert!(text.contains(r#""b":{"value":2,"unit":"V""#), "{text}");
    }
}
