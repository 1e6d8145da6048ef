//! Modbus points: the `points:` entries of a Modbus device, and the exact
//! conversion between register contents and [`Value`]s in both directions
//! (types, word and byte order, `bit`, `scale` and `offset`).
//!
//! Owns `PointConfig` and the bit-level encoding. Must not do I/O: every
//! function here is pure and unit-tested against hand-computed registers.

use serde::Deserialize;

use crate::reading::Value;
use crate::southbound::guard::{DEFAULT_RATE, WriteLimits, WriteRate};
mod words;

use words::{f32_to_f64, ordered_bytes, ordered_u64, range, words_from_bytes, wrong};

/// The four Modbus data tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Table {
    /// `true` for the single-bit tables (coils, discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The most items one read request may cover (Modbus application protocol §6).
    pub fn protocol_limit(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    /// The read function code.
    pub fn read_fc(self) -> u8 {
        match self {
            Table::Coil => 1,
            Table::Discrete => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// The type a point's registers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl DataType {
    /// Registers a value of this type spans (`string` uses its `length`).
    pub fn registers(self, length: Option<u16>) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length.unwrap_or(1),
        }
    }

    /// The raw values a 16- or 32-bit integer type holds; `None` for the
    /// others (64-bit values are past f64's exact integers, floats and
    /// strings have no useful bound).
    pub fn raw_range(self) -> Option<(f64, f64)> {
        match self {
            DataType::U16 => Some((0.0, f64::from(u16::MAX))),
            DataType::I16 => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
            DataType::U32 => Some((0.0, f64::from(u32::MAX))),
            DataType::I32 => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// `big` (most significant first, the Modbus default) or `little`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// One entry of a Modbus device's `points:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    pub name: String,
    pub table: Table,
    /// Register (or coil) number as the datasheet prints it; see `address_base`.
    pub address: u32,
    /// Defaults to `bool` on coil/discrete tables and with `bit`, else `u16`.
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// Registers of a `string`.
    pub length: Option<u16>,
    #[serde(default)]
    pub word_order: Order,
    #[serde(default)]
    pub byte_order: Order,
    /// One bit (0 = least significant) of a 16-bit register, read as bool.
    pub bit: Option<u8>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub unit: Option<String>,
    #[serde(default)]
    pub writable: bool,
    /// Writes below this value are refused (engineering units, after
    /// `scale` / `offset`); writable numeric points only.
    pub min: Option<f64>,
    /// Writes above this value are refused; writable numeric points only.
    pub max: Option<f64>,
    /// At most this many writes per period; default [`DEFAULT_RATE`].
    pub max_write_rate: Option<WriteRate>,
    /// Sparkplug report by exception: a change of at most this much is not
    /// sent (overrides `sparkplug.deadband`; read by `sparkplug/model.rs`).
    pub deadband: Option<f64>,
}

/// A validated point, ready to decode and encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    pub table: Table,
    pub data_type: DataType,
    pub length: u16,
    pub word_order: Order,
    pub byte_order: Order,
    pub bit: Option<u8>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

impl PointConfig {
    /// The effective type.
    pub fn data_type(&self) -> DataType {
        self.data_type
            .unwrap_or(if self.table.is_bits() || self.bit.is_some() {
                DataType::Bool
            } else {
                DataType::U16
            })
    }

    /// Items (registers or bits) this point spans.
    pub fn count(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type().registers(self.length)
        }
    }

    /// The limits the commands task checks a write against; `None` for a
    /// point that is not writable.
    pub fn write_limits(&self) -> Option<WriteLimits> {
        self.writable.then(|| WriteLimits {
            min: self.min,
            max: self.max,
            rate: self.max_write_rate.unwrap_or(DEFAULT_RATE),
        })
    }

    pub fn codec(&self) -> Codec {
        Codec {
            table: self.table,
            data_type: self.data_type(),
            length: self.count(),
            word_order: self.word_order,
            byte_order: self.byte_order,
            bit: self.bit,
            scale: self.scale,
            offset: self.offset,
        }
    }
}

/// Why a value could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("expected {expected} registers, got {got}")]
    Length { expected: usize, got: usize },
    #[error("expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: String },
    #[error("{value} is out of range for {ty} (allowed {min} to {max})")]
    OutOfRange {
        value: String,
        ty: &'static str,
        min: String,
        max: String,
    },
    #[error("the string is {got} bytes long; this point holds at most {max}")]
    TooLong { got: usize, max: usize },
    #[error("{0} is not a finite number")]
    NotFinite(f64),
}

impl Codec {
    fn scaled(&self) -> bool {
        self.scale.is_some() || self.offset.is_some()
    }

    /// `raw * scale + offset`, rounded to 15 significant digits so float
    /// noise does not show (`3 * 0.1` publishes as `0.3`).
    pub(crate) fn apply_scale(&self, raw: f64) -> f64 {
        let x = raw * self.scale.unwrap_or(1.0) + self.offset.unwrap_or(0.0);
        if !x.is_finite() {
            return x;
        }
        format!("{x:.14e}").parse().unwrap_or(x)
    }

    /// Decodes a point from its registers (in address order).
    pub fn decode_words(&self, words: &[u16]) -> Result<Value, CodecError> {
        let want = usize::from(self.length);
        if words.len() != want {
            return Err(CodecError::Length {
                expected: want,
                got: words.len(),
            });
        }
        if let Some(bit) = self.bit {
            return Ok(Value::Bool(words[0] >> bit & 1 == 1));
        }
        let raw = ordered_u64(words, self.word_order, self.byte_order);
        let value = match self.data_type {
            DataType::Bool => return Ok(Value::Bool(raw != 0)),
            DataType::String => {
                let bytes = ordered_bytes(words, self.word_order, self.byte_order);
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                let s = String::from_utf8_lossy(&bytes[..end]);
                return Ok(Value::String(s.trim_end().to_string()));
            }
            DataType::U16 | DataType::U32 => Value::Int(raw as i64),
            DataType::I16 => Value::Int(i64::from(raw as u16 as i16)),
            DataType::I32 => Value::Int(i64::from(raw as u32 as i32)),
            DataType::U64 => match i64::try_from(raw) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(raw as f64),
            },
            DataType::I64 => Value::Int(raw as i64),
            DataType::F32 => Value::Float(f32_to_f64(f32::from_bits(raw as u32))),
            DataType::F64 => Value::Float(f64::from_bits(raw)),
        };
        if !self.scaled() {
            return Ok(value);
        }
        let x = match value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            other => return Ok(other),
        };
        Ok(Value::Float(self.apply_scale(x)))
    }

    /// Decodes a bool point from a coil or discrete input.
    pub fn decode_bit(&self, bit: bool) -> Value {
        Value::Bool(bit)
    }

    /// Encodes a value for a register point: registers in address order.
    pub fn encode_words(&self, value: &Value) -> Result<Vec<u16>, CodecError> {
        let bytes: Vec<u8> = match self.data_type {
            DataType::String => {
                let Value::String(s) = value else {
                    return Err(wrong("a string", value));
                };
                let max = usize::from(self.length) * 2;
                if s.len() > max {
                    return Err(CodecError::TooLong { got: s.len(), max });
                }
                let mut b = s.as_bytes().to_vec();
                b.resize(max, 0);
                b
            }
            DataType::Bool => {
                let Value::Bool(b) = value else {
                    return Err(wrong("true or false", value));
                };
                vec![0, u8::from(*b)]
            }
            DataType::F32 => {
                let x = self.unscale(value)?;
                if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                    return Err(range(x, "f32", f32::MIN, f32::MAX));
                }
                (x as f32).to_bits().to_be_bytes().to_vec()
            }
            DataType::F64 => self.unscale(value)?.to_bits().to_be_bytes().to_vec(),
            int => {
                let raw = self.integer(value, int)?;
                let n = usize::from(int.registers(None)) * 2;
                raw.to_be_bytes()[8 - n..].to_vec()
            }
        };
        Ok(words_from_bytes(&bytes, self.word_order, self.byte_order))
    }

    /// The raw number the value stands for: `(value - offset) / scale`.
    fn unscale(&self, value: &Value) -> Result<f64, CodecError> {
        let v = match value {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            other => return Err(wrong("a number", other)),
        };
        if !v.is_finite() {
            return Err(CodecError::NotFinite(v));
        }
        Ok((v - self.offset.unwrap_or(0.0)) / self.scale.unwrap_or(1.0))
    }

    /// An integer type's raw bits (two's complement in the low bytes).
    fn integer(&self, value: &Value, ty: DataType) -> Result<u64, CodecError> {
        let (min, max): (i128, i128) = match ty {
            DataType::U16 => (0, i128::from(u16::MAX)),
            DataType::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
            DataType::U32 => (0, i128::from(u32::MAX)),
            DataType::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
            DataType::U64 => (0, i128::from(u64::MAX)),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
        };
        let n: i128 = match value {
            Value::Int(i) if !self.scaled() => i128::from(*i),
            Value::Float(f) if !self.scaled() && f.fract() != 0.0 => {
                return Err(wrong("a whole number", value));
            }
            Value::Int(_) | Value::Float(_) => {
                let x = self.unscale(value)?.round();
                if x < min as f64 || x > max as f64 {
                    return Err(range(x, ty.as_str(), min, max));
                }
                x as i128
            }
            other => return Err(wrong("a number", other)),
        };
        if n < min || n > max {
            return Err(range(n, ty.as_str(), min, max));
        }
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    //! Exhaustive tests of the point codec against registers computed by hand.

    use super::*;

    fn codec(yaml: &str) -> Codec {
        let p: PointConfig = serde_yaml_ng::from_str(yaml).expect("point yaml");
        p.codec()
    }

    fn holding(ty: &str, extra: &str) -> Codec {
        codec(&format!(
            "{{name: p, table: holding, address: 0, type: {ty}{extra}}}"
        ))
    }

    /// All four 32-bit layouts of 0x11223344 (A=11 B=22 C=33 D=44).
    const LAYOUTS_32: [(&str, &str, [u16; 2]); 4] = [
        ("big", "big", [0x1122, 0x3344]),       // ABCD
        ("little", "big", [0x3344, 0x1122]),    // CDAB
        ("big", "little", [0x2211, 0x4433]),    // BADC
        ("little", "little", [0x4433, 0x2211]), // DCBA
    ];

    #[test]
    fn u32_in_all_four_layouts() {
        for (wo, bo, words) in LAYOUTS_32 {
            let c = holding("u32", &format!(", word_order: {wo}, byte_order: {bo}"));
            assert_eq!(
                c.decode_words(&words),
                Ok(Value::Int(0x1122_3344)),
                "{wo}/{bo}"
            );
            assert_eq!(
                c.encode_words(&Value::Int(0x1122_3344)),
                Ok(words.to_vec()),
                "{wo}/{bo}"
            );
        }
    }

    #[test]
    fn f32_in_all_four_layouts() {
        // 123.456f32 = 0x42F6E979
        let bits = 123.456f32.to_bits();
        assert_eq!(bits, 0x42F6_E979);
        let cases: [(&str, &str, [u16; 2]); 4] = [
            ("big", "big", [0x42F6, 0xE979]),
            ("little", "big", [0xE979, 0x42F6]),
            ("big", "little", [0xF642, 0x79E9]),
            ("little", "little", [0x79E9, 0xF642]),
        ];
        for (wo, bo, words) in cases {
            let c = holding("f32", &format!(", word_order: {wo}, byte_order: {bo}"));
            assert_eq!(
                c.decode_words(&words),
                Ok(Value::Float(123.456)),
                "{wo}/{bo}"
            );
            assert_eq!(
                c.encode_words(&Value::Float(123.456)),
                Ok(words.to_vec()),
                "{wo}/{bo}"
            );
        }
    }

    #[test]
    fn f32_publishes_the_shortest_decimal() {
        let c = holding("f32", "");
        let w = 0.1f32.to_bits();
        let words = [(w >> 16) as u16, w as u16];
        assert_eq!(c.decode_words(&words), Ok(Value::Float(0.1)));
    }

    #[test]
    fn sixteen_bit_types_and_byte_order() {
        assert_eq!(
            holding("u16", "").decode_words(&[0xFFFE]),
            Ok(Value::Int(65534))
        );
        assert_eq!(
            holding("i16", "").decode_words(&[0xFFFE]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            holding("u16", ", byte_order: little").decode_words(&[0x3412]),
            Ok(Value::Int(0x1234))
        );
        assert_eq!(
            holding("i16", ", byte_order: little").encode_words(&Value::Int(-2)),
            Ok(vec![0xFEFF])
        );
        // word order has no effect on one register
        assert_eq!(
            holding("u16", ", word_order: little").decode_words(&[0x1234]),
            Ok(Value::Int(0x1234))
        );
    }

    #[test]
    fn signed_32_and_64() {
        assert_eq!(
            holding("i32", "").decode_words(&[0xFFFF, 0xFFFE]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            holding("i32", ", word_order: little").decode_words(&[0xFFFE, 0xFFFF]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            holding("i64", "").decode_words(&[0x8000, 0, 0, 0]),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            holding("i64", "").encode_words(&Value::Int(-1)),
            Ok(vec![0xFFFF; 4])
        );
    }

    #[test]
    fn sixty_four_bit_layouts() {
        // 0x0102030405060708
        let v = 0x0102_0304_0506_0708i64;
        let cases: [(&str, &str, [u16; 4]); 4] = [
            ("big", "big", [0x0102, 0x0304, 0x0506, 0x0708]),
            ("little", "big", [0x0708, 0x0506, 0x0304, 0x0102]),
            ("big", "little", [0x0201, 0x0403, 0x0605, 0x0807]),
            ("little", "little", [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (wo, bo, words) in cases {
            for ty in ["u64", "i64"] {
                let c = holding(ty, &format!(", word_order: {wo}, byte_order: {bo}"));
                assert_eq!(c.decode_words(&words), Ok(Value::Int(v)), "{ty} {wo}/{bo}");
                assert_eq!(
                    c.encode_words(&Value::Int(v)),
                    Ok(words.to_vec()),
                    "{ty} {wo}/{bo}"
                );
            }
        }
    }

    #[test]
    fn u64_above_i64_becomes_float() {
        assert_eq!(
            holding("u64", "").decode_words(&[0xFFFF; 4]),
            Ok(Value::Float(u64::MAX as f64))
        );
    }

    #[test]
    fn f64_round_trips() {
        let c = holding("f64", ", word_order: little");
        let words = c.encode_words(&Value::Float(-1234.5678)).unwrap();
        let b = (-1234.5678f64).to_bits();
        assert_eq!(
            words,
            vec![
                b as u16,
                (b >> 16) as u16,
                (b >> 32) as u16,
                (b >> 48) as u16
            ]
        );
        assert_eq!(c.decode_words(&words), Ok(Value::Float(-1234.5678)));
    }

    #[test]
    fn strings_trim_padding_and_respect_byte_order() {
        let c = holding("string", ", length: 3");
        assert_eq!(
            c.decode_words(&[0x4142, 0x4300, 0x0000]),
            Ok(Value::String("ABC".into()))
        );
        assert_eq!(
            c.encode_words(&Value::String("ABC".into())),
            Ok(vec![0x4142, 0x4300, 0])
        );
        let le = holding("string", ", length: 2, byte_order: little");
        assert_eq!(
            le.decode_words(&[0x4241, 0x2043]),
            Ok(Value::String("ABC".into()))
        );
        assert_eq!(
            c.encode_words(&Value::String("ABCDEFG".into())),
            Err(CodecError::TooLong { got: 7, max: 6 })
        );
    }

    #[test]
    fn bits_of_a_register() {
        let c = codec("{name: p, table: holding, address: 0, bit: 15}");
        assert_eq!(c.data_type, DataType::Bool);
        assert_eq!(c.decode_words(&[0x8000]), Ok(Value::Bool(true)));
        assert_eq!(c.decode_words(&[0x7FFF]), Ok(Value::Bool(false)));
        let c0 = codec("{name: p, table: input, address: 0, bit: 0}");
        assert_eq!(c0.decode_words(&[0x0001]), Ok(Value::Bool(true)));
    }

    #[test]
    fn scale_and_offset_both_ways() {
        let c = holding("i16", ", scale: 0.1, offset: -40");
        assert_eq!(c.decode_words(&[615]), Ok(Value::Float(21.5)));
        assert_eq!(
            holding("u16", ", scale: 0.1").decode_words(&[3]),
            Ok(Value::Float(0.3))
        );
        // 21.5 = raw * 0.1 - 40  =>  raw = 615
        assert_eq!(c.encode_words(&Value::Float(21.5)), Ok(vec![615]));
        assert_eq!(c.encode_words(&Value::Int(-40)), Ok(vec![0]));
        // raw 40000 does not fit i16
        assert!(matches!(
            c.encode_words(&Value::Int(3960)),
            Err(CodecError::OutOfRange { .. })
        ));
    }

    #[test]
    fn out_of_range_and_wrong_types_are_refused() {
        let u16c = holding("u16", "");
        assert!(matches!(
            u16c.encode_words(&Value::Int(65536)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            u16c.encode_words(&Value::Int(-1)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            u16c.encode_words(&Value::Bool(true)),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            u16c.encode_words(&Value::String("7".into())),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            u16c.encode_words(&Value::Float(1.5)),
            Err(CodecError::WrongType { .. })
        ));
        assert_eq!(u16c.encode_words(&Value::Float(7.0)), Ok(vec![7]));
        assert!(matches!(
            holding("f32", "").encode_words(&Value::Float(1e39)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            holding("f64", "").encode_words(&Value::Float(f64::NAN)),
            Err(CodecError::NotFinite(_))
        ));
        assert!(matches!(
            holding("u32", "").encode_words(&Value::Int(1 << 32)),
            Err(CodecError::OutOfRange { .. })
        ));
        assert_eq!(
            holding("u32", "").encode_words(&Value::Int(u32::MAX.into())),
            Ok(vec![0xFFFF, 0xFFFF])
        );
    }

    #[test]
    fn wrong_register_count_is_an_error() {
        assert_eq!(
            holding("u32", "").decode_words(&[1]),
            Err(CodecError::Length {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn defaults_follow_the_table() {
        let c = codec("{name: p, table: coil, address: 3}");
        assert_eq!(c.data_type, DataType::Bool);
        assert_eq!(c.length, 1);
        let h = codec("{name: p, table: input, address: 3}");
        assert_eq!(h.data_type, DataType::U16);
    }
}
