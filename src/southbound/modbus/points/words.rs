//! Helpers of the Modbus point codec: register words to value-ordered bytes
//! and back (word and byte order), the shortest `f32` decimal, and the codec
//! errors for a wrong type or an out-of-range value.
//!
//! Owns nothing but these pure functions. Must not do I/O.

use super::{CodecError, Order};
use crate::reading::Value;

/// The bytes of `words` in value order (most significant first), after
/// undoing the configured word and byte order.
pub(super) fn ordered_bytes(words: &[u16], word_order: Order, byte_order: Order) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let [hi, lo] = w.to_be_bytes();
        match byte_order {
            Order::Big => out.extend_from_slice(&[hi, lo]),
            Order::Little => out.extend_from_slice(&[lo, hi]),
        }
    };
    match word_order {
        Order::Big => words.iter().copied().for_each(&mut push),
        Order::Little => words.iter().rev().copied().for_each(&mut push),
    }
    out
}

/// The last 8 bytes of [`ordered_bytes`] as a big-endian integer, without
/// building them: what every numeric type decodes from (at most 4 words),
/// once per reading.
pub(super) fn ordered_u64(words: &[u16], word_order: Order, byte_order: Order) -> u64 {
    let mut raw = 0u64;
    let mut push = |w: u16| {
        let w = match byte_order {
            Order::Big => w,
            Order::Little => w.swap_bytes(),
        };
        // the shift drops the words before the last four, as taking the
        // last 8 bytes does
        raw = raw << 16 | u64::from(w);
    };
    match word_order {
        Order::Big => words.iter().copied().for_each(&mut push),
        Order::Little => words.iter().rev().copied().for_each(&mut push),
    }
    raw
}

/// The inverse of [`ordered_bytes`]: registers in address order.
pub(super) fn words_from_bytes(bytes: &[u8], word_order: Order, byte_order: Order) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (a, b) = (c[0], c.get(1).copied().unwrap_or(0));
            match byte_order {
                Order::Big => u16::from_be_bytes([a, b]),
                Order::Little => u16::from_be_bytes([b, a]),
            }
        })
        .collect();
    if word_order == Order::Little {
        words.reverse();
    }
    words
}

/// The shortest decimal that reads back as the same `f32`, as an `f64`
/// (so `0.1f32` publishes as `0.1`, not `0.10000000149011612`).
pub(super) fn f32_to_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    v.to_string().parse::<f64>().unwrap_or(f64::from(v))
}

pub(super) fn wrong(expected: &'static str, got: &Value) -> CodecError {
    let got = match got {
        Value::Bool(b) => format!("the bool {b}"),
        Value::Int(i) => format!("the number {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::String(s) => format!("the string {s:?}"),
    };
    CodecError::WrongType { expected, got }
}

pub(super) fn range<A: ToString, B: ToString>(
    value: A,
    ty: &'static str,
    min: B,
    max: B,
) -> CodecError {
    CodecError::OutOfRange {
        value: value.to_string(),
        ty,
        min: min.to_string(),
        max: max.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_u64_is_the_last_eight_ordered_bytes_for_every_order_and_length() {
        let words = [0x1234, 0xabcd, 0x0f0e, 0x8001, 0x7fff, 0x00ff];
        let orders = [Order::Big, Order::Little];
        for n in 1..=words.len() {
            for wo in orders {
                for bo in orders {
                    let bytes = ordered_bytes(&words[..n], wo, bo);
                    let mut be = [0u8; 8];
                    let k = bytes.len().min(8);
                    be[8 - k..].copy_from_slice(&bytes[bytes.len() - k..]);
                    assert_eq!(
                        ordered_u64(&words[..n], wo, bo),
                        u64::from_be_bytes(be),
                        "{n} words, {wo:?} word order, {bo:?} byte order"
                    );
                }
            }
        }
    }
}
