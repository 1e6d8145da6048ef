//! A DDATA's bytes written field by field: the payload
//! [`encode::ddata`](super::encode::ddata) builds, without building it. A
//! DDATA goes out for every poll of every device, and prost's path (a
//! `Metric` struct of optional fields for each reading, each field checked
//! once for the length and once for the bytes, one byte at a time through
//! `BufMut`) cost about 300 instructions per metric; this writes each
//! metric on the stack and appends it at once. The bytes are prost's, in
//! the same field order (a test compares them for every datatype and kind
//! of value).
//!
//! Owns the protobuf wire format of a DDATA (field numbers, wire types,
//! varints), taken from the specification's payload definition
//! (proto/sparkplug_b.proto). Must not keep state nor decide what a DDATA
//! carries (the node does), nor how a value becomes a metric's
//! (`payload::metric_value` and `payload::scalar` do).

use super::encode::ms;
use super::exception::Sent;
use super::payload::{DataType, MetricValue, Scalar, metric_value, scalar};
use crate::reading::Value;

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// The key byte of a field (every field written here is numbered below 16).
const fn key(field: u8, wire: u8) -> u8 {
    field << 3 | wire
}

// Payload
const PAYLOAD_TIMESTAMP: u8 = key(1, VARINT);
const PAYLOAD_METRICS: u8 = key(2, LEN);
const PAYLOAD_SEQ: u8 = key(3, VARINT);
// Payload.Metric
const ALIAS: u8 = key(2, VARINT);
const TIMESTAMP: u8 = key(3, VARINT);
const DATATYPE: u8 = key(4, VARINT);
const IS_NULL: u8 = key(7, VARINT);
// Payload.Metric's `value` oneof
const INT_VALUE: u8 = key(10, VARINT);
const LONG_VALUE: u8 = key(11, VARINT);
const FLOAT_VALUE: u8 = key(12, FIXED32);
const DOUBLE_VALUE: u8 = key(13, FIXED64);
const BOOLEAN_VALUE: u8 = key(14, VARINT);
const STRING_VALUE: u8 = key(15, LEN);

/// Bytes reserved per metric: a number's with a timestamp of these years
/// takes 18 to 30.
const METRIC_ESTIMATE: usize = 32;

/// Appends `v` as a varint ([`Chunk::varint`]).
fn put_varint(buf: &mut Vec<u8>, v: u64) {
    let mut c = Chunk::new();
    c.varint(v);
    buf.extend_from_slice(c.done());
}

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (70 - (v | 1).leading_zeros() as usize) / 7
}

/// Bytes of a number's or a bool's value field (key included).
fn scalar_len(v: Scalar) -> usize {
    match v {
        Scalar::Int(x) => 1 + varint_len(u64::from(x)),
        Scalar::Long(x) => 1 + varint_len(x),
        Scalar::Float(_) => 1 + 4,
        Scalar::Double(_) => 1 + 8,
        Scalar::Boolean(_) => 1 + 1,
    }
}

/// A metric's bytes but a text's, built on the stack and appended to the
/// payload at once: one capacity check per metric instead of one per
/// byte. The most a metric of a number takes is 46 bytes: key (1),
/// length (1), alias and timestamp (11 each), datatype (11 at most as
/// written: a `u64`), value (11); the array is 64, so that a byte's place
/// is taken modulo 64 and needs no bounds check.
struct Chunk {
    bytes: [u8; 64],
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        debug_assert!(self.len < self.bytes.len());
        self.bytes[self.len & 63] = b;
        self.len += 1;
    }

    /// `v` as a varint: 7 bits per byte, low bits first (10 bytes at most).
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    fn extend(&mut self, b: &[u8]) {
        self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn done(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A metric's timestamp field (key and varint), kept from one metric to
/// the next: the metrics of a poll share their timestamp as a rule, and its
/// varint (6 bytes for today's milliseconds) is the longest part of a
/// metric to write.
struct Stamp {
    at: Option<u64>,
    field: Chunk,
}

impl Stamp {
    fn new() -> Stamp {
        Stamp {
            at: None,
            field: Chunk::new(),
        }
    }

    fn field(&mut self, at: u64) -> &[u8] {
        if self.at != Some(at) {
            self.field = Chunk::new();
            self.field.push(TIMESTAMP);
            self.field.varint(at);
            self.at = Some(at);
        }
        self.field.done()
    }
}

/// What a DDATA says of one metric: its alias, its datatype, its value
/// (null: `None`) and when it was read (ms since the epoch).
pub type WireMetric<'a> = (u64, DataType, &'a Sent, i64);

/// Appends one DDATA metric (field 2 of the payload): alias, timestamp,
/// datatype, then the value or `is_null` (a value that has no form in the
/// datatype is null, as [`metric_value`] has it).
fn put_metric(buf: &mut Vec<u8>, stamp: &mut Stamp, (alias, kind, value, at): WireMetric) {
    let value = match (value, kind) {
        (Some(v), DataType::String | DataType::Text) => {
            return put_text(buf, stamp, alias, kind, v, at);
        }
        (Some(v), _) => scalar(kind, v),
        (None, _) => None,
    };
    let mut c = Chunk::new();
    head(&mut c, stamp, alias, kind, at, value.map_or(2, scalar_len));
    match value {
        None => c.extend(&[IS_NULL, 1]),
        Some(Scalar::Int(x)) => {
            c.push(INT_VALUE);
            c.varint(u64::from(x));
        }
        Some(Scalar::Long(x)) => {
            c.push(LONG_VALUE);
            c.varint(x);
        }
        Some(Scalar::Float(x)) => {
            c.push(FLOAT_VALUE);
            c.extend(&x.to_le_bytes());
        }
        Some(Scalar::Double(x)) => {
            c.push(DOUBLE_VALUE);
            c.extend(&x.to_le_bytes());
        }
        Some(Scalar::Boolean(b)) => c.extend(&[BOOLEAN_VALUE, u8::from(b)]),
    }
    buf.extend_from_slice(c.done());
}

/// Writes a metric's key, length, alias, timestamp and datatype into `c`,
/// for a value field of `value_len` bytes.
fn head(c: &mut Chunk, stamp: &mut Stamp, alias: u64, kind: DataType, at: i64, value_len: usize) {
    let (datatype, stamp) = (kind as u64, stamp.field(ms(at)));
    let len = 2 + varint_len(alias) + stamp.len() + varint_len(datatype) + value_len;
    c.push(PAYLOAD_METRICS);
    c.varint(len as u64);
    c.push(ALIAS);
    c.varint(alias);
    c.extend(stamp);
    c.push(DATATYPE);
    c.varint(datatype);
}

/// [`put_metric`] of a text metric: the text after the head.
fn put_text(buf: &mut Vec<u8>, stamp: &mut Stamp, alias: u64, kind: DataType, v: &Value, at: i64) {
    let Some(MetricValue::StringValue(text)) = metric_value(kind, v) else {
        return;
    };
    let value_len = 1 + varint_len(text.len() as u64) + text.len();
    let mut c = Chunk::new();
    head(&mut c, stamp, alias, kind, at, value_len);
    buf.extend_from_slice(c.done());
    buf.push(STRING_VALUE);
    put_varint(buf, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

/// The DDATA [`encode::ddata`](super::encode::ddata) builds from `metrics`
/// (each a metric's alias, datatype, value and when it was read) with
/// `seq`: timestamp (1), metrics (2), seq (3), as prost orders them.
pub fn ddata_bytes<'a>(
    metrics: impl ExactSizeIterator<Item = WireMetric<'a>>,
    ts: i64,
    seq: u64,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 * 11 + metrics.len() * METRIC_ESTIMATE);
    buf.push(PAYLOAD_TIMESTAMP);
    put_varint(&mut buf, ms(ts));
    let mut stamp = Stamp::new();
    for m in metrics {
        put_metric(&mut buf, &mut stamp, m);
    }
    buf.push(PAYLOAD_SEQ);
    put_varint(&mut buf, seq);
    buf
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::super::encode::{data_metric, ddata};
    use super::super::model::MetricDef;
    use super::*;
    use crate::reading::Value;

    #[test]
    fn varint_lengths_at_each_boundary() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!((varint_len(v), buf.len()), (n, n), "{v}");
        }
    }

    /// The direct DDATA bytes are prost's encoding of the same payload,
    /// for every datatype, values of every kind, null values, large and
    /// zero timestamps and aliases, one metric and many.
    #[test]
    fn ddata_bytes_equal_prosts_encoding_of_ddata() {
        let datatypes = [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::UInt16,
            DataType::UInt32,
            DataType::Int64,
            DataType::UInt64,
            DataType::Float,
            DataType::Double,
            DataType::Boolean,
            DataType::String,
            DataType::DateTime,
        ];
        let values: [Sent; 8] = [
            None,
            Some(Value::Int(0)),
            Some(Value::Int(-70_000)),
            Some(Value::Int(i64::MAX)),
            Some(Value::Float(-21.25)),
            Some(Value::Float(f64::NAN)),
            Some(Value::Bool(true)),
            Some(Value::String("ok \u{e9}".into())),
        ];
        let defs: Vec<MetricDef> = datatypes
            .iter()
            .enumerate()
            .map(|(i, dt)| MetricDef {
                name: format!("m{i}").into(),
                alias: [0, 1, 127, 128, 300, u64::MAX][i % 6],
                datatype: *dt,
                unit: None,
                scale: None,
                writable: false,
                deadband: None,
            })
            .collect();
        let mut cases = Vec::new();
        for def in &defs {
            for v in &values {
                // runs of three metrics with the same timestamp (a poll's),
                // then another: its field is written once and kept
                let at = [0, 1, 1_765_000_000_123][(cases.len() / 3) % 3];
                cases.push((def, v, at));
            }
        }
        for n in [1, 2, cases.len()] {
            for (ts, seq) in [(0, 0), (1_765_000_000_999, 255)] {
                let chosen = &cases[..n];
                let by_prost = ddata(
                    chosen
                        .iter()
                        .map(|(def, v, at)| data_metric(def, v, *at))
                        .collect(),
                    ts,
                    Some(seq),
                )
                .encode_to_vec();
                let wire = chosen
                    .iter()
                    .map(|(d, v, at)| (d.alias, d.datatype, *v, *at));
                let direct = ddata_bytes(wire, ts, seq);
                assert_eq!(direct, by_prost, "{n} metrics, ts {ts}, seq {seq}");
            }
        }
    }
}
