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
