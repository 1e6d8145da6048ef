//! Writes to Modbus points: checks a `.../set` command against the point,
//! encodes the value with the point's type, order, scale and offset
//! inverted, writes it with FC5/FC15 (coils) or FC6/FC16 (registers), reads
//! it back and publishes the outcome on `.../set/result`.
//!
//! Owns the write rules. Must not write anything that did not pass every
//! check: a refused command costs no bus time.

use std::borrow::Cow;

use tokio_modbus::Request;
use tracing::{info, warn};

use super::device::Poller;
use super::link::{CallError, Link};
use super::points::Table;
use crate::reading::Value;
use crate::southbound::SourceContext;
use crate::southbound::commands::{self, WriteCommand};

/// Why a write was refused or failed; the text goes to `.../set/result`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("device {device} has no point {point:?}")]
    UnknownPoint { device: String, point: String },
    #[error("point {point} is not writable (it needs `writable: true` in the config)")]
    NotWritable { point: String },
    #[error("point {point}: {reason}; nothing was written")]
    Value { point: String, reason: String },
    #[error("writing {point} (unit {unit}, {request}) failed: {error}")]
    Device {
        point: String,
        unit: u8,
        request: String,
        error: CallError,
    },
}

/// Handles one command and publishes its result. Returns `false` when the
/// pipeline has closed.
pub(super) async fn handle<L: Link>(
    poller: &mut Poller,
    link: &mut L,
    cmd: WriteCommand,
    ctx: &SourceContext,
) -> bool {
    let outcome = write(poller, link, &cmd, ctx).await;
    match &outcome {
        Ok(()) => info!(device = %cmd.device, point = %cmd.point, "write done"),
        Err(e) => {
            warn!(device = %cmd.device, point = %cmd.point, error = %e, "write refused or failed")
        }
    }
    let result = outcome.map_err(|e| e.to_string());
    ctx.publish(commands::result(
        &ctx.gateway,
        &cmd.device,
        &cmd.point,
        &result,
    ))
    .await
}

async fn write<L: Link>(
    poller: &mut Poller,
    link: &mut L,
    cmd: &WriteCommand,
    ctx: &SourceContext,
) -> Result<(), WriteError> {
    let Some(idx) = poller.points.iter().position(|p| *p.name == *cmd.point) else {
        return Err(WriteError::UnknownPoint {
            device: cmd.device.clone(),
            point: cmd.point.clone(),
        });
    };
    let p = &poller.points[idx];
    if !p.writable {
        return Err(WriteError::NotWritable {
            point: cmd.point.clone(),
        });
    }
    let bad = |reason: String| WriteError::Value {
        point: cmd.point.clone(),
        reason,
    };
    let value = commands::parse_value(&cmd.payload).map_err(bad)?;
    let req: Request<'static> = match p.codec.table {
        Table::Coil => {
            let on = match value {
                Value::Bool(b) => b,
                Value::Int(0) => false,
                Value::Int(1) => true,
                other => {
                    return Err(bad(format!(
                        "a coil takes true or false (or 1/0), not {}",
                        other.to_json()
                    )));
                }
            };
            if poller.write_multiple {
                Request::WriteMultipleCoils(p.start, Cow::Owned(vec![on]))
            } else {
                Request::WriteSingleCoil(p.start, on)
            }
        }
        Table::Holding => {
            let words = p
                .codec
                .encode_words(&value)
                .map_err(|e| bad(e.to_string()))?;
            if words.len() == 1 && !poller.write_multiple {
                Request::WriteSingleRegister(p.start, words[0])
            } else {
                Request::WriteMultipleRegisters(p.start, Cow::Owned(words))
            }
        }
        // validation keeps read-only tables from being writable
        Table::Discrete | Table::Input => {
            return Err(WriteError::NotWritable {
                point: cmd.point.clone(),
            });
        }
    };
    let attempts = 1 + if poller.online { poller.retries } else { 0 };
    let mut last = None;
    for _ in 0..attempts {
        let r = link.call(poller.unit, req.clone(), poller.timeout).await;
        super::device::count(&poller.name, &r);
        match r {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                let again = e.is_no_answer();
                last = Some(e);
                if !again {
                    break;
                }
            }
        }
    }
    if let Some(error) = last {
        return Err(WriteError::Device {
            point: cmd.point.clone(),
            unit: poller.unit,
            request: super::link::Described(&req).to_string(),
            error,
        });
    }
    if let Err(e) = poller.read_back(link, idx, ctx).await {
        warn!(device = %cmd.device, point = %cmd.point, error = %e, "written, but the read-back failed");
    }
    Ok(())
}
