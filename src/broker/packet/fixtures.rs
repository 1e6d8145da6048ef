//! Byte builders for the packet tests: frames, strings, properties.

use bytes::{BufMut, BytesMut};

use super::remaining_length;

/// A whole packet: first byte, remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(first);
    remaining_length(&mut b, body.len());
    b.put_slice(body);
    b
}

/// A length-prefixed string or binary.
pub fn s(v: &[u8]) -> Vec<u8> {
    let mut o = (v.len() as u16).to_be_bytes().to_vec();
    o.extend_from_slice(v);
    o
}

/// Properties: their length (one byte: tests stay under 128) and bytes.
pub fn props(p: &[u8]) -> Vec<u8> {
    assert!(p.len() < 128);
    let mut o = vec![p.len() as u8];
    o.extend_from_slice(p);
    o
}

/// A string property `id`.
pub fn sp(id: u8, v: &[u8]) -> Vec<u8> {
    let mut o = vec![id];
    o.extend(s(v));
    o
}

/// A User Property.
pub fn user(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut o = vec![0x26];
    o.extend(s(k));
    o.extend(s(v));
    o
}

/// Concatenates byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
