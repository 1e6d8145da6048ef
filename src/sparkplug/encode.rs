//! The payloads the node sends: NBIRTH, NDEATH, DBIRTH, DDATA, DDEATH,
//! built as the specification orders (births carry every metric with
//! name, alias, datatype and properties; data carries aliases only), and
//! the send-time transform of a stored DDATA into history
//! ([`historical`]: its `seq`, `is_historical` on every metric).
//!
//! Owns the payloads' shape. Must not keep state: the sequence numbers are
//! given by the caller.

use super::exception::Sent;
use super::model::{BD_SEQ, DeviceModel, MetricDef, REBIRTH, REBIRTH_ALIAS};
use super::payload::{
    DataType, Metric, Payload, PropertySet, PropertyValueKind, metric_value, property,
};

/// Property keys of a birth metric.
pub const PROP_UNIT: &str = "engUnit";
pub const PROP_SCALE: &str = "scale";
pub const PROP_WRITABLE: &str = "writable";

pub(super) fn ms(ts: i64) -> u64 {
    u64::try_from(ts).unwrap_or(0)
}

fn bd_seq_metric(bd_seq: u64, ts: i64) -> Metric {
    Metric {
        name: Some(BD_SEQ.into()),
        timestamp: Some(ms(ts)),
        datatype: Some(DataType::Int64 as u32),
        value: Some(super::payload::MetricValue::LongValue(bd_seq)),
        ..Metric::default()
    }
}

/// NBIRTH: seq 0, `bdSeq`, `Node Control/Rebirth` (false).
pub fn nbirth(bd_seq: u64, ts: i64) -> Payload {
    let rebirth = Metric {
        name: Some(REBIRTH.into()),
        alias: Some(REBIRTH_ALIAS),
        timestamp: Some(ms(ts)),
        datatype: Some(DataType::Boolean as u32),
        value: Some(super::payload::MetricValue::BooleanValue(false)),
        ..Metric::default()
    };
    Payload {
        timestamp: Some(ms(ts)),
        metrics: vec![bd_seq_metric(bd_seq, ts), rebirth],
        seq: Some(0),
        ..Payload::default()
    }
}

/// NDEATH: `bdSeq` only, no seq (the will registered at CONNECT, or sent
/// on a clean stop).
pub fn ndeath(bd_seq: u64, ts: i64) -> Payload {
    Payload {
        timestamp: Some(ms(ts)),
        metrics: vec![bd_seq_metric(bd_seq, ts)],
        ..Payload::default()
    }
}

/// `value` (null when `None`) in the field `def`'s datatype uses.
fn set_value(m: &mut Metric, def: &MetricDef, value: &Sent) {
    m.value = value.as_ref().and_then(|v| metric_value(def.datatype, v));
    if m.value.is_none() {
        m.is_null = Some(true);
    }
}

fn properties(def: &MetricDef) -> PropertySet {
    let mut set = PropertySet::default();
    if let Some(u) = &def.unit {
        set.keys.push(PROP_UNIT.into());
        set.values.push(property(
            DataType::String,
            PropertyValueKind::StringValue(u.clone()),
        ));
    }
    if let Some(s) = def.scale {
        set.keys.push(PROP_SCALE.into());
        set.values.push(property(
            DataType::Double,
            PropertyValueKind::DoubleValue(s),
        ));
    }
    set.keys.push(PROP_WRITABLE.into());
    set.values.push(property(
        DataType::Boolean,
        PropertyValueKind::BooleanValue(def.writable),
    ));
    set
}

/// DBIRTH: every metric of `model` with its current value (`values[i]`:
/// the value and its timestamp; null when never read well).
pub fn dbirth(model: &DeviceModel, values: &[(Sent, i64)], ts: i64, seq: u64) -> Payload {
    let metrics = model
        .metrics
        .iter()
        .zip(values)
        .map(|(def, (value, at))| {
            let mut m = Metric {
                name: Some(def.name.to_string()),
                alias: Some(def.alias),
                timestamp: Some(ms(if *at > 0 { *at } else { ts })),
                datatype: Some(def.datatype as u32),
                properties: Some(properties(def)),
                ..Metric::default()
            };
            set_value(&mut m, def, value);
            m
        })
        .collect();
    Payload {
        timestamp: Some(ms(ts)),
        metrics,
        seq: Some(seq),
        ..Payload::default()
    }
}

/// One metric of a DDATA: by alias, with its datatype (which lets
/// decoders that do not keep births read the value) and its timestamp.
pub fn data_metric(def: &MetricDef, value: &Sent, at: i64) -> Metric {
    let mut m = Metric {
        alias: Some(def.alias),
        timestamp: Some(ms(at)),
        datatype: Some(def.datatype as u32),
        ..Metric::default()
    };
    set_value(&mut m, def, value);
    m
}

/// DDATA of `metrics`; `seq` is `None` for a payload to be stored (it
/// gets one when sent: [`historical`]).
pub fn ddata(metrics: Vec<Metric>, ts: i64, seq: Option<u64>) -> Payload {
    Payload {
        timestamp: Some(ms(ts)),
        metrics,
        seq,
        ..Payload::default()
    }
}

/// DDEATH: no metrics.
pub fn ddeath(ts: i64, seq: u64) -> Payload {
    Payload {
        timestamp: Some(ms(ts)),
        seq: Some(seq),
        ..Payload::default()
    }
}

/// A stored DDATA made history at send time: its `seq`, and
/// `is_historical = true` on every metric (their timestamps are the
/// original ones).
pub fn historical(mut stored: Payload, seq: u64) -> Payload {
    stored.seq = Some(seq);
    for m in &mut stored.metrics {
        m.is_historical = Some(true);
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Value;

    fn model() -> DeviceModel {
        DeviceModel {
            name: "plc".into(),
            metrics: vec![MetricDef {
                name: "temp".into(),
                alias: 2,
                datatype: DataType::Double,
                unit: Some("°C".into()),
                scale: Some(0.1),
                writable: true,
                deadband: None,
            }],
        }
    }

    #[test]
    fn births_name_every_metric_and_data_uses_aliases() {
        let m = model();
        let b = dbirth(&m, &[(Some(Value::Float(21.5)), 10)], 11, 1);
        let metric = &b.metrics[0];
        assert_eq!(metric.name.as_deref(), Some("temp"));
        assert_eq!(metric.alias, Some(2));
        assert_eq!(metric.timestamp, Some(10));
        let props = metric.properties.as_ref().unwrap();
        assert_eq!(props.keys, ["engUnit", "scale", "writable"]);
        let d = data_metric(&m.metrics[0], &None, 12);
        assert_eq!((&d.name, d.alias, d.is_null), (&None, Some(2), Some(true)));
        let h = historical(ddata(vec![d], 12, None), 9);
        assert_eq!(h.seq, Some(9));
        assert_eq!(h.metrics[0].is_historical, Some(true));
        assert_eq!(h.metrics[0].timestamp, Some(12));
    }

    #[test]
    fn ndeath_has_bd_seq_and_no_seq() {
        let d = ndeath(4, 1);
        assert_eq!(d.seq, None);
        assert_eq!(d.metrics[0].name.as_deref(), Some("bdSeq"));
        let b = nbirth(4, 1);
        assert_eq!(b.seq, Some(0));
        assert_eq!(b.metrics[0].value, d.metrics[0].value);
    }
}
