//! The forward rule for both doors into the outbox (the gateway's own
//! publishes, `own.rs`; local clients' publishes, `clients.rs`): which
//! `forward` entry takes a local topic and the row it becomes upstream.
//!
//! Owns that one function. Must not write to the outbox or send anything.

use std::sync::Arc;

use bytes::Bytes;

use super::config::{ForwardRule, UplinkConfig};
use super::outbox::NewMessage;

/// The `forward` entries and the gateway status topic, which no entry
/// takes (the bridge says `online`/`offline` upstream itself).
pub(super) struct Route {
    cfg: Arc<UplinkConfig>,
    status_topic: String,
}

impl Route {
    pub(super) fn new(cfg: Arc<UplinkConfig>, status_topic: String) -> Route {
        Route { cfg, status_topic }
    }

    /// The row for a local message on `topic`, under the first `forward`
    /// entry that matches, with that entry: the topic is `prefix + topic`,
    /// the QoS the lower of `max_qos` and the entry's `qos`, the expiry
    /// the entry's. `None` when no entry takes it.
    pub(super) fn message(
        &self,
        topic: &str,
        payload: &Bytes,
        max_qos: u8,
        retain: bool,
    ) -> Option<(NewMessage, &ForwardRule)> {
        if topic == self.status_topic {
            return None;
        }
        let rule = self.cfg.forward_rule(topic)?;
        let msg = NewMessage {
            topic: format!("{}{}", rule.prefix, topic),
            payload: payload.clone(),
            qos: max_qos.min(rule.qos.as_u8()),
            retain,
            expiry_s: rule.expiry_secs(),
            props: None,
        };
        Some((msg, rule))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn route() -> Route {
        let yaml = "gateway: { id: gw }\nuplink:\n  url: mqtt://h\n  forward:\n    - { filter: \"gw/a/#\", prefix: \"s/\", qos: 1, message_expiry: 1h }\n    - { filter: \"gw/#\", qos: 0 }\n";
        let cfg = crate::settings::parse(yaml, Path::new("t.yaml")).expect("valid");
        Route::new(Arc::new(cfg.uplink.expect("uplink")), "gw/status".into())
    }

    #[test]
    fn the_first_matching_entry_gives_topic_qos_and_expiry() {
        let r = route();
        let (msg, rule) = r
            .message("gw/a/t", &Bytes::from_static(b"1"), 2, true)
            .expect("forwarded");
        assert_eq!(rule.filter, "gw/a/#");
        assert_eq!(
            (msg.topic.as_str(), msg.qos, msg.expiry_s, msg.retain),
            ("s/gw/a/t", 1, 3600, true)
        );
        // a publisher's lower QoS wins; the second entry sends QoS 0
        let (msg, _) = r.message("gw/a/t", &Bytes::new(), 0, false).expect("fwd");
        assert_eq!(msg.qos, 0);
        let (msg, _) = r.message("gw/b", &Bytes::new(), 2, false).expect("fwd");
        assert_eq!((msg.topic.as_str(), msg.qos, msg.expiry_s), ("gw/b", 0, 0));
    }

    #[test]
    fn the_status_topic_and_unmatched_topics_are_not_forwarded() {
        let r = route();
        assert!(r.message("gw/status", &Bytes::new(), 1, false).is_none());
        assert!(r.message("other/t", &Bytes::new(), 1, false).is_none());
    }
}
