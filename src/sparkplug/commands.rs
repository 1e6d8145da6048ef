//! Reading the commands a host sends: NCMD (`Node Control/Rebirth`) and
//! DCMD (metric writes, by name or by alias), and which writes a device
//! accepts (its writable points only).
//!
//! Owns [`NodeCommand`], [`Write`] and the refusal wording. Must not talk
//! to devices or publish: the node hands accepted writes to the existing
//! `.../set` path.

use prost::Message;

use super::model::{DeviceModel, REBIRTH, REBIRTH_ALIAS};
use super::payload::{MetricValue, Payload, value_of};
use crate::reading::Value;

/// What an NCMD asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    Rebirth,
    /// A payload without anything the node acts on.
    Nothing,
}

/// One metric write of a DCMD, checked against the device's model.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Accepted { point: usize, value: Value },
    Refused { metric: String, reason: String },
}

/// Decodes a command payload.
pub fn decode(payload: &[u8]) -> Result<Payload, prost::DecodeError> {
    Payload::decode(payload)
}

/// The NCMD's request: `Node Control/Rebirth` (by name or alias) = true.
pub fn node_command(p: &Payload) -> NodeCommand {
    let rebirth = p.metrics.iter().any(|m| {
        let named = m.name.as_deref() == Some(REBIRTH) || m.alias == Some(REBIRTH_ALIAS);
        named && m.value == Some(MetricValue::BooleanValue(true))
    });
    if rebirth {
        NodeCommand::Rebirth
    } else {
        NodeCommand::Nothing
    }
}

/// The writes of a DCMD to `device`: each metric found by name (or by
/// alias), writable and with a value; the others refused with a reason.
pub fn writes(device: &DeviceModel, p: &Payload) -> Vec<Write> {
    p.metrics
        .iter()
        .map(|m| {
            let found = match (&m.name, m.alias) {
                (Some(n), _) => device.index_of(n),
                (None, Some(a)) => device.index_of_alias(a),
                (None, None) => None,
            };
            let label = m
                .name
                .clone()
                .or(m.alias.map(|a| format!("alias {a}")))
                .unwrap_or_else(|| "a metric without name or alias".into());
            let Some(i) = found else {
                return Write::Refused {
                    metric: label,
                    reason: format!("device {} has no such metric", device.name),
                };
            };
            if !device.metrics[i].writable {
                return Write::Refused {
                    metric: label,
                    reason: "the point is not writable".into(),
                };
            }
            match value_of(m) {
                Some(value) => Write::Accepted { point: i, value },
                None => Write::Refused {
                    metric: label,
                    reason: "no value a point can take".into(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::model::MetricDef;
    use crate::sparkplug::payload::{DataType, Metric};

    fn device() -> DeviceModel {
        let def = |name: &str, alias, writable| MetricDef {
            name: name.into(),
            alias,
            datatype: DataType::Int16,
            unit: None,
            scale: None,
            writable,
            deadband: None,
        };
        DeviceModel {
            name: "plc".into(),
            metrics: vec![def("setpoint", 2, true), def("temp", 3, false)],
        }
    }

    fn metric(name: Option<&str>, alias: Option<u64>, v: u32) -> Metric {
        Metric {
            name: name.map(Into::into),
            alias,
            datatype: Some(DataType::Int16 as u32),
            value: Some(MetricValue::IntValue(v)),
            ..Metric::default()
        }
    }

    #[test]
    fn writes_go_to_writable_points_only() {
        let p = Payload {
            metrics: vec![
                metric(Some("setpoint"), None, 0xFFFF_FFFB),
                metric(None, Some(2), 7),
                metric(Some("temp"), None, 1),
                metric(Some("nope"), None, 1),
            ],
            ..Payload::default()
        };
        let w = writes(&device(), &p);
        assert_eq!(
            w[0],
            Write::Accepted {
                point: 0,
                value: Value::Int(-5)
            }
        );
        assert_eq!(
            w[1],
            Write::Accepted {
                point: 0,
                value: Value::Int(7)
            }
        );
        assert!(matches!(&w[2], Write::Refused { reason, .. } if reason.contains("not writable")));
        assert!(
            matches!(&w[3], Write::Refused { reason, .. } if reason.contains("no such metric"))
        );
    }

    #[test]
    fn rebirth_is_asked_by_name_or_alias() {
        let ask = |m: Metric| {
            node_command(&Payload {
                metrics: vec![m],
                ..Payload::default()
            })
        };
        let on = Some(MetricValue::BooleanValue(true));
        let by_name = Metric {
            name: Some(REBIRTH.into()),
            value: on.clone(),
            ..Metric::default()
        };
        let by_alias = Metric {
            alias: Some(REBIRTH_ALIAS),
            value: on,
            ..Metric::default()
        };
        assert_eq!(ask(by_name), NodeCommand::Rebirth);
        assert_eq!(ask(by_alias), NodeCommand::Rebirth);
        assert_eq!(ask(Metric::default()), NodeCommand::Nothing);
    }
}
