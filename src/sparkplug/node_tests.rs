//! The node's state machine without I/O: births, seq, report by
//! exception, device deaths and rebirths, history while the host is away.

use prost::Message;

use super::model::{DeviceModel, MetricDef};
use super::node::{Node, Out, Phase, Reporting};
use super::payload::{DataType, MetricValue, Payload};
use super::topics::Ids;
use crate::reading::{Quality, Reading, Value};

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
            Out::Send(p) => Some((p.topic.clone(), Payload::decode(p.payload.clone()).unwrap())),
            _ => None,
        })
        .collect()
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
        metrics: vec![super::payload::Metric {
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
