//! One Modbus request over a transport, with the timeout tokio-modbus lacks,
//! and the classification of everything that can go wrong with it.
//!
//! Owns [`Link`] (implemented by the TCP connection and the serial bus) and
//! [`CallError`]. A transport must drop its tokio-modbus context after any
//! error other than an exception: after a timeout the context is out of step
//! for ever (seen with tokio-modbus 0.17). Must not know about points or status.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio_modbus::{ExceptionCode, Request, Response};

/// Why one request got no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Nothing came back in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// Bytes came back in time, but never a valid frame (bad CRC, noise).
    #[error("garbled reply ({bytes} bytes, no valid frame within {waited:?})")]
    Garbled { bytes: usize, waited: Duration },
    /// The transport failed (connection refused or reset, port missing).
    #[error("{0}")]
    Io(String),
    /// The device answered with a Modbus exception.
    #[error("exception {}", exception_text(*.0))]
    Exception(ExceptionCode),
    /// The device answered, but the reply does not fit the request (wrong
    /// function code, wrong length, mismatching header).
    #[error("bad reply: {0}")]
    BadReply(String),
}

impl CallError {
    /// `true` when the device (or the path to it) did not answer at all:
    /// these count towards going offline. A gateway that answers 0A or 0B
    /// says that the unit behind it does not answer: the unit is offline,
    /// the gateway is fine (its connection is kept).
    pub fn is_no_answer(&self) -> bool {
        matches!(
            self,
            CallError::Timeout(_)
                | CallError::Io(_)
                | CallError::Exception(
                    ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable
                )
        )
    }

    /// `true` when the transport must be reset before the next request.
    pub fn needs_reset(&self) -> bool {
        !matches!(self, CallError::Exception(_))
    }
}

/// `IllegalDataAddress (0x02)`.
pub fn exception_text(e: ExceptionCode) -> String {
    let code: u8 = e.into();
    let name = match e {
        ExceptionCode::IllegalFunction => "IllegalFunction",
        ExceptionCode::IllegalDataAddress => "IllegalDataAddress",
        ExceptionCode::IllegalDataValue => "IllegalDataValue",
        ExceptionCode::ServerDeviceFailure => "ServerDeviceFailure",
        ExceptionCode::Acknowledge => "Acknowledge",
        ExceptionCode::ServerDeviceBusy => "ServerDeviceBusy",
        ExceptionCode::MemoryParityError => "MemoryParityError",
        ExceptionCode::GatewayPathUnavailable => "GatewayPathUnavailable",
        ExceptionCode::GatewayTargetDevice => "GatewayTargetDevice",
        ExceptionCode::Custom(_) => "Custom",
    };
    let why = match e {
        ExceptionCode::ServerDeviceBusy => ": the device is busy",
        ExceptionCode::GatewayPathUnavailable => ": the gateway has no path to the unit",
        ExceptionCode::GatewayTargetDevice => ": the unit behind the gateway does not answer",
        _ => "",
    };
    format!("{name} (0x{code:02X}){why}")
}

/// Maps tokio-modbus's nested result onto [`CallError`].
pub fn classify(r: tokio_modbus::Result<Response>) -> Result<Response, CallError> {
    match r {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(CallError::Exception(e)),
        Err(tokio_modbus::Error::Transport(e)) => {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Err(CallError::BadReply(e.to_string()))
            } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // the decoder ran out of frame: a byte count that lies
                Err(CallError::BadReply(
                    "the reply is shorter than its byte count says".into(),
                ))
            } else {
                Err(CallError::Io(e.to_string()))
            }
        }
        Err(tokio_modbus::Error::Protocol(p)) => Err(CallError::BadReply(short_protocol(&p))),
    }
}

fn short_protocol(p: &tokio_modbus::ProtocolError) -> String {
    match p {
        tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => {
            format!("mismatching header ({message})")
        }
        tokio_modbus::ProtocolError::FunctionCodeMismatch { request, result } => {
            let got = match result {
                Ok(r) => r.function_code().value(),
                Err(e) => e.function.value(),
            };
            format!(
                "function code {:#04x} in reply to {:#04x}",
                got,
                request.value()
            )
        }
    }
}

/// A transport that can carry one request to a unit.
pub trait Link: Send {
    /// Sends `req` to `unit` and waits at most `timeout` for the reply.
    fn call(
        &mut self,
        unit: u8,
        req: Request<'static>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, CallError>> + Send;
}

/// Checks that a read reply carries exactly the registers asked for.
pub fn registers(resp: Response, count: u16) -> Result<Vec<u16>, CallError> {
    let words = match resp {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => w,
        other => {
            return Err(CallError::BadReply(format!(
                "unexpected reply {:#04x}",
                other.function_code().value()
            )));
        }
    };
    if words.len() != usize::from(count) {
        return Err(CallError::BadReply(format!(
            "{} registers in reply to a read of {count}",
            words.len()
        )));
    }
    Ok(words)
}

/// Checks that a read reply carries at least the bits asked for (replies
/// are padded to whole bytes) and trims the padding.
pub fn bits(resp: Response, count: u16) -> Result<Vec<bool>, CallError> {
    let mut bits = match resp {
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => b,
        other => {
            return Err(CallError::BadReply(format!(
                "unexpected reply {:#04x}",
                other.function_code().value()
            )));
        }
    };
    let want = usize::from(count);
    if bits.len() < want || bits.len() >= want + 8 {
        return Err(CallError::BadReply(format!(
            "{} bits in reply to a read of {count}",
            bits.len()
        )));
    }
    bits.truncate(want);
    Ok(bits)
}

/// A short name of a request for messages: `read holding 0..=9`.
pub struct Described<'a>(pub &'a Request<'static>);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Request as R;
        let range = |f: &mut fmt::Formatter<'_>, t: &str, a: u16, n: usize| {
            if n <= 1 {
                write!(f, "{t} {a}")
            } else {
                write!(f, "{t} {a}..={}", usize::from(a) + n - 1)
            }
        };
        match self.0 {
            R::ReadCoils(a, n) => range(f, "read coil", *a, usize::from(*n)),
            R::ReadDiscreteInputs(a, n) => range(f, "read discrete", *a, usize::from(*n)),
            R::ReadHoldingRegisters(a, n) => range(f, "read holding", *a, usize::from(*n)),
            R::ReadInputRegisters(a, n) => range(f, "read input", *a, usize::from(*n)),
            R::WriteSingleCoil(a, _) => range(f, "write coil", *a, 1),
            R::WriteMultipleCoils(a, c) => range(f, "write coil", *a, c.len()),
            R::WriteSingleRegister(a, _) => range(f, "write holding", *a, 1),
            R::WriteMultipleRegisters(a, w) => range(f, "write holding", *a, w.len()),
            other => write!(f, "{other:?}"),
        }
    }
}
