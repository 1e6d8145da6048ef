//! A subscription's options: the QoS granted and what MQTT 5 adds (no
//! local, retain as published, the subscription identifier; retain
//! handling acts at SUBSCRIBE time only), and how they are stored in
//! `broker.db`'s one `qos` column (the options byte of MQTT 5's
//! SUBSCRIBE, figure 3-12: QoS in bits 0-1, no local bit 2, retain as
//! published bit 3; a 3.1.1 row is its QoS alone, read the same way).
//!
//! Also what a shared subscription's filter means (`$share/{group}/{filter}`,
//! MQTT 5 section 4.8.2, also offered to 3.1.1 clients as mosquitto does).
//!
//! Owns the options value and the shared-filter syntax only. Must not know
//! about sessions or packets.

/// One subscription's options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOpts {
    pub qos: u8,
    /// Messages the subscriber published itself are not sent back
    /// (MQTT-3.8.3-3).
    pub no_local: bool,
    /// Live copies keep the publisher's retain flag (MQTT-3.3.1-12/13).
    pub retain_as_published: bool,
    /// The Subscription Identifier, sent with every matching message
    /// (MQTT-3.3.4-3). Not stored: after a restart it is gone.
    pub id: Option<u32>,
    /// Retain Handling (MQTT 5): 0 send retained messages at subscribe, 1
    /// only for a new subscription, 2 never. Used at SUBSCRIBE only.
    pub retain_handling: u8,
}

/// Where a subscription sits in the subscription tree: the filter matched
/// against topics, and for a shared subscription its whole filter (group
/// and filter: the key its members share).
pub struct TreeKey<'a> {
    pub filter: &'a str,
    pub share: Option<std::sync::Arc<str>>,
}

/// The tree key of `filter`; `None` for a `$share/...` filter that is not
/// `$share/{group}/{filter}` with a group of no `+`, `#` or `/` and a
/// non-empty filter (MQTT-4.8.2-1/2).
pub fn tree_key(filter: &str) -> Option<TreeKey<'_>> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Some(TreeKey {
            filter,
            share: None,
        });
    };
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some(TreeKey {
        filter: inner,
        share: Some(filter.into()),
    })
}

impl SubOpts {
    /// A 3.1.1 subscription: its QoS alone.
    pub fn qos(qos: u8) -> SubOpts {
        SubOpts {
            qos,
            ..SubOpts::default()
        }
    }

    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        (self.qos & 3) | (u8::from(self.no_local) << 2) | (u8::from(self.retain_as_published) << 3)
    }

    /// From the stored byte.
    pub fn from_byte(b: u8) -> SubOpts {
        SubOpts {
            qos: b & 3,
            no_local: b & 4 != 0,
            retain_as_published: b & 8 != 0,
            id: None,
            retain_handling: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_byte_keeps_qos_no_local_and_retain_as_published() {
        let o = SubOpts {
            qos: 2,
            no_local: true,
            retain_as_published: true,
            id: Some(7),
            retain_handling: 0,
        };
        let back = SubOpts::from_byte(o.to_byte());
        assert_eq!(o.retain_handling, 0);
        assert_eq!(
            (back.qos, back.no_local, back.retain_as_published),
            (2, true, true)
        );
        assert_eq!(SubOpts::from_byte(1), SubOpts::qos(1), "a 3.1.1 row");
    }

    #[test]
    fn shared_filters_name_a_group_and_a_filter() {
        let k = tree_key("$share/g1/a/+/c").expect("valid");
        assert_eq!(k.filter, "a/+/c");
        assert_eq!(k.share.as_deref(), Some("$share/g1/a/+/c"));
        assert!(tree_key("a/#").expect("plain").share.is_none());
        for bad in [
            "$share/g1",
            "$share//a",
            "$share/g+/a",
            "$share/g#/a",
            "$share/g1/",
        ] {
            assert!(tree_key(bad).is_none(), "{bad}");
        }
    }
}
