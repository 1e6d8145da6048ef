//! Writes to Modbus points: checks a `.../set` command against the point,
//! encodes the value with the point's type, order, scale and offset
//! inverted, writes it with FC5/FC15 (coils) or FC6/FC16 (registers), a
//! `bit` of a holding register with FC22 (`bit_write: mask`) or FC3 then
//! FC6 (`read_modify_write`), reads it back and publishes the outcome on
//! `.../set/result`. A write to unit 0 is a broadcast: sent once, never
//! answered, never read back.
//!
//! Owns the write rules. Must not write anything that did not pass every
//! check: a refused command costs no bus time.

use std::borrow::Cow;

use tokio_modbus::{ExceptionCode, Request, Response};
use tracing::{info, warn};

use super::BitWrite;
use super::device::{BUSY_RETRIES, Poller};
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
    let as_bool = |value: &Value, what: &str| match value {
        Value::Bool(b) => Ok(*b),
        Value::Int(0) => Ok(false),
        Value::Int(1) => Ok(true),
        other => Err(bad(format!(
            "{what} takes true or false (or 1/0), not {}",
            other.to_json()
        ))),
    };
    let (start, table, bit) = (p.start, p.codec.table, p.codec.bit);
    let req: Request<'static> = match (table, bit) {
        (Table::Coil, _) => {
            let on = as_bool(&value, "a coil")?;
            if poller.write_multiple {
                Request::WriteMultipleCoils(start, Cow::Owned(vec![on]))
            } else {
                Request::WriteSingleCoil(start, on)
            }
        }
        (Table::Holding, Some(bit)) => {
            let on = as_bool(&value, "a bit")?;
            let mask = 1u16 << bit;
            match poller.bit_write {
                BitWrite::Mask => {
                    Request::MaskWriteRegister(start, !mask, if on { mask } else { 0 })
                }
                BitWrite::ReadModifyWrite => {
                    // the race window: a change of the register's other bits
                    // between this read and the write below is overwritten
                    let read = Request::ReadHoldingRegisters(start, 1);
                    let resp = send(poller, link, &read)
                        .await
                        .map_err(|error| device_error(poller, &cmd.point, &read, error))?;
                    let word = super::link::registers(resp, 1)
                        .map_err(|error| device_error(poller, &cmd.point, &read, error))?[0];
                    let word = if on { word | mask } else { word & !mask };
                    single_register(poller, start, word)
                }
            }
        }
        (Table::Holding, None) => {
            let words = p
                .codec
                .encode_words(&value)
                .map_err(|e| bad(e.to_string()))?;
            if words.len() == 1 {
                single_register(poller, start, words[0])
            } else {
                Request::WriteMultipleRegisters(start, Cow::Owned(words))
            }
        }
        // validation keeps read-only tables from being writable
        (Table::Discrete | Table::Input, _) => {
            return Err(WriteError::NotWritable {
                point: cmd.point.clone(),
            });
        }
    };
    send(poller, link, &req)
        .await
        .map_err(|error| device_error(poller, &cmd.point, &req, error))?;
    if poller.broadcast {
        // a broadcast has no answer and nothing to read back
        return Ok(());
    }
    if let Err(e) = poller.read_back(link, idx, ctx).await {
        warn!(device = %cmd.device, point = %cmd.point, error = %e, "written, but the read-back failed");
    }
    Ok(())
}

/// FC6, or FC16 for devices without it.
fn single_register(poller: &Poller, start: u16, word: u16) -> Request<'static> {
    if poller.write_multiple {
        Request::WriteMultipleRegisters(start, Cow::Owned(vec![word]))
    } else {
        Request::WriteSingleRegister(start, word)
    }
}

fn device_error(
    poller: &Poller,
    point: &str,
    req: &Request<'static>,
    error: CallError,
) -> WriteError {
    WriteError::Device {
        point: point.to_string(),
        unit: poller.unit,
        request: super::link::Described(req).to_string(),
        error,
    }
}

/// One request of a write: asked again after no answer (`retries`, while
/// the device is online) and after a busy answer (`busy_delay` apart); a
/// broadcast goes out once.
async fn send<L: Link>(
    poller: &Poller,
    link: &mut L,
    req: &Request<'static>,
) -> Result<Response, CallError> {
    let mut attempts = if poller.broadcast || !poller.online {
        0
    } else {
        poller.retries
    };
    let mut busy = 0;
    loop {
        let r = link.call(poller.unit, req.clone(), poller.timeout).await;
        super::device::count(&poller.name, &r);
        match r {
            Err(CallError::Exception(ExceptionCode::ServerDeviceBusy)) if busy < BUSY_RETRIES => {
                busy += 1;
                tokio::time::sleep(poller.busy_delay).await;
            }
            Err(e) if e.is_no_answer() && attempts > 0 => attempts -= 1,
            r => return r,
        }
    }
}
