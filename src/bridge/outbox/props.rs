//! The MQTT 5 request/response properties a row keeps (column `props`):
//! a local client's reply to a command carries its correlation data, user
//! properties and response topic upstream. Stored as a small tagged
//! encoding: one byte tag, a 4-byte big-endian length, the bytes.
//!
//! Owns that encoding. Must not do I/O.

/// The properties of a row; `None` in the row when it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowProps {
    /// Upstream response topic (the forward entry's prefix applied).
    pub response_topic: Option<String>,
    pub correlation_data: Option<bytes::Bytes>,
    pub user: Vec<(String, String)>,
}

const RESPONSE: u8 = 1;
const CORRELATION: u8 = 2;
const USER_KEY: u8 = 3;
const USER_VALUE: u8 = 4;

impl RowProps {
    pub fn is_empty(&self) -> bool {
        self.response_topic.is_none() && self.correlation_data.is_none() && self.user.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |tag: u8, b: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        };
        if let Some(t) = &self.response_topic {
            put(RESPONSE, t.as_bytes());
        }
        if let Some(c) = &self.correlation_data {
            put(CORRELATION, c);
        }
        for (k, v) in &self.user {
            put(USER_KEY, k.as_bytes());
            put(USER_VALUE, v.as_bytes());
        }
        out
    }

    /// The properties `b` holds; a damaged value gives what could be read.
    pub fn decode(mut b: &[u8]) -> RowProps {
        let mut p = RowProps::default();
        let mut key = None;
        while b.len() >= 5 {
            let tag = b[0];
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            let Some(value) = b.get(5..5 + len) else {
                break;
            };
            let text = || String::from_utf8_lossy(value).into_owned();
            match tag {
                RESPONSE => p.response_topic = Some(text()),
                CORRELATION => p.correlation_data = Some(bytes::Bytes::copy_from_slice(value)),
                USER_KEY => key = Some(text()),
                USER_VALUE => {
                    if let Some(k) = key.take() {
                        p.user.push((k, text()));
                    }
                }
                _ => {}
            }
            b = &b[5 + len..];
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_survive_the_column() {
        let p = RowProps {
            response_topic: Some("site/r/1".into()),
            correlation_data: Some(bytes::Bytes::from_static(&[0, 1, 2])),
            user: vec![("a".into(), "1".into()), ("b".into(), "".into())],
        };
        assert_eq!(RowProps::decode(&p.encode()), p);
        assert!(RowProps::decode(&[]).is_empty());
        assert!(
            RowProps::decode(&[1, 0, 0, 0, 9, b'x']).is_empty(),
            "cut short"
        );
    }
}
