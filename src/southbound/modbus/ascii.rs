//! Modbus ASCII framing (`framing: ascii`): `:`, the unit id, the PDU and
//! the LRC as hex digits, then CR LF. tokio-modbus has no ASCII codec, so
//! this file encodes the requests fieldgate sends and decodes their
//! replies into tokio-modbus's `Response`, and the bus (`bus.rs`) carries
//! the frames.
//!
//! Owns the PDU bytes of the function codes fieldgate uses (1 to 6, 15, 16,
//! 22) and the ASCII frame. Must not do I/O.

use tokio_modbus::{ExceptionCode, Request, Response};

use super::link::CallError;

/// LRC of the Modbus serial line spec: the two's complement of the byte sum.
pub fn lrc(data: &[u8]) -> u8 {
    data.iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The request PDU (function code first).
pub fn request_pdu(req: &Request<'_>) -> Result<Vec<u8>, CallError> {
    let mut p = Vec::with_capacity(8);
    match req {
        Request::ReadCoils(a, n)
        | Request::ReadDiscreteInputs(a, n)
        | Request::ReadHoldingRegisters(a, n)
        | Request::ReadInputRegisters(a, n) => {
            p.push(req.function_code().value());
            push_u16(&mut p, *a);
            push_u16(&mut p, *n);
        }
        Request::WriteSingleCoil(a, on) => {
            p.push(5);
            push_u16(&mut p, *a);
            push_u16(&mut p, if *on { 0xFF00 } else { 0 });
        }
        Request::WriteSingleRegister(a, w) => {
            p.push(6);
            push_u16(&mut p, *a);
            push_u16(&mut p, *w);
        }
        Request::WriteMultipleCoils(a, bits) => {
            p.push(15);
            push_u16(&mut p, *a);
            push_u16(&mut p, bits.len() as u16);
            let bytes = bits.len().div_ceil(8);
            p.push(bytes as u8);
            let at = p.len();
            p.resize(at + bytes, 0);
            for (i, on) in bits.iter().enumerate() {
                p[at + i / 8] |= u8::from(*on) << (i % 8);
            }
        }
        Request::WriteMultipleRegisters(a, words) => {
            p.push(16);
            push_u16(&mut p, *a);
            push_u16(&mut p, words.len() as u16);
            p.push((words.len() * 2) as u8);
            for w in words.iter() {
                push_u16(&mut p, *w);
            }
        }
        Request::MaskWriteRegister(a, and, or) => {
            p.push(22);
            push_u16(&mut p, *a);
            push_u16(&mut p, *and);
            push_u16(&mut p, *or);
        }
        other => {
            return Err(CallError::BadReply(format!(
                "{other:?} is not supported with framing: ascii"
            )));
        }
    }
    Ok(p)
}

/// `:` + hex of unit, PDU and LRC + CR LF.
pub fn frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(pdu.len() + 2);
    raw.push(unit);
    raw.extend_from_slice(pdu);
    raw.push(lrc(&raw));
    let mut out = Vec::with_capacity(raw.len() * 2 + 3);
    out.push(b':');
    for b in raw {
        out.extend_from_slice(format!("{b:02X}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn bad(why: impl Into<String>) -> CallError {
    CallError::BadReply(why.into())
}

/// The unit id and PDU of one received line (between `:` and CR LF),
/// with the LRC checked.
pub fn parse_line(line: &[u8]) -> Result<(u8, Vec<u8>), CallError> {
    let hex = line.strip_prefix(b":").unwrap_or(line);
    if hex.len() < 6 || !hex.len().is_multiple_of(2) {
        return Err(bad(format!("ASCII frame of {} characters", line.len())));
    }
    let text = std::str::from_utf8(hex).map_err(|_| bad("non-ASCII bytes in an ASCII frame"))?;
    let raw: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad("a character that is not a hex digit in an ASCII frame"))?;
    let (body, sum) = raw.split_at(raw.len() - 1);
    if lrc(body) != sum[0] {
        return Err(bad("LRC mismatch"));
    }
    Ok((body[0], body[1..].to_vec()))
}

/// The response to `req` carried by `pdu`: an exception, or the reply
/// decoded, with its function code and byte count checked.
pub fn response(req: &Request<'_>, pdu: &[u8]) -> Result<Response, CallError> {
    let fc = req.function_code().value();
    let Some(&got) = pdu.first() else {
        return Err(bad("empty reply"));
    };
    if got == fc | 0x80 {
        let code = pdu
            .get(1)
            .copied()
            .ok_or_else(|| bad("exception without a code"))?;
        return Err(CallError::Exception(ExceptionCode::new(code)));
    }
    if got != fc {
        return Err(bad(format!(
            "function code {got:#04x} in reply to {fc:#04x}"
        )));
    }
    let u16_at = |i: usize| -> Result<u16, CallError> {
        match (pdu.get(i), pdu.get(i + 1)) {
            (Some(h), Some(l)) => Ok(u16::from_be_bytes([*h, *l])),
            _ => Err(bad("the reply is shorter than its byte count says")),
        }
    };
    let data = || -> Result<&[u8], CallError> {
        let n = usize::from(*pdu.get(1).ok_or_else(|| bad("reply without byte count"))?);
        pdu.get(2..2 + n)
            .filter(|d| pdu.len() == 2 + d.len())
            .ok_or_else(|| bad("the byte count does not match the data"))
    };
    let bits = |d: &[u8]| -> Vec<bool> {
        (0..d.len() * 8)
            .map(|i| d[i / 8] >> (i % 8) & 1 == 1)
            .collect()
    };
    let words = |d: &[u8]| -> Vec<u16> {
        d.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    };
    Ok(match req {
        Request::ReadCoils(..) => Response::ReadCoils(bits(data()?)),
        Request::ReadDiscreteInputs(..) => Response::ReadDiscreteInputs(bits(data()?)),
        Request::ReadHoldingRegisters(..) => Response::ReadHoldingRegisters(words(data()?)),
        Request::ReadInputRegisters(..) => Response::ReadInputRegisters(words(data()?)),
        Request::WriteSingleCoil(..) => Response::WriteSingleCoil(u16_at(1)?, u16_at(3)? == 0xFF00),
        Request::WriteSingleRegister(..) => Response::WriteSingleRegister(u16_at(1)?, u16_at(3)?),
        Request::WriteMultipleCoils(..) => Response::WriteMultipleCoils(u16_at(1)?, u16_at(3)?),
        Request::WriteMultipleRegisters(..) => {
            Response::WriteMultipleRegisters(u16_at(1)?, u16_at(3)?)
        }
        Request::MaskWriteRegister(..) => {
            Response::MaskWriteRegister(u16_at(1)?, u16_at(3)?, u16_at(5)?)
        }
        other => {
            return Err(bad(format!(
                "{other:?} is not supported with framing: ascii"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_spec_example() {
        // Modbus serial line spec: read holding 0x006B, 3 registers, unit 0x11
        let req = Request::ReadHoldingRegisters(0x006B, 3);
        let f = frame(0x11, &request_pdu(&req).expect("pdu"));
        assert_eq!(f, b":1103006B00037E\r\n".to_vec());
    }

    #[test]
    fn replies_decode_and_lies_are_caught() {
        let req = Request::ReadHoldingRegisters(0, 2);
        let pdu = [3u8, 4, 0x12, 0x34, 0x56, 0x78];
        let line = frame(1, &pdu);
        let (unit, got) = parse_line(&line[..line.len() - 2]).expect("parse");
        assert_eq!(unit, 1);
        assert_eq!(
            response(&req, &got).expect("decode"),
            Response::ReadHoldingRegisters(vec![0x1234, 0x5678])
        );
        // a byte count of 6 with 4 data bytes
        assert!(response(&req, &[3, 6, 0x12, 0x34, 0x56, 0x78]).is_err());
        // exception 02
        assert_eq!(
            response(&req, &[0x83, 2]),
            Err(CallError::Exception(ExceptionCode::IllegalDataAddress))
        );
        // a flipped digit fails the LRC
        let mut broken = line[..line.len() - 2].to_vec();
        broken[6] = if broken[6] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            parse_line(&broken),
            Err(CallError::BadReply("LRC mismatch".into()))
        );
    }
}
