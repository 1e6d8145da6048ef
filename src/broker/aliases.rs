//! The broker's own Topic Aliases towards one MQTT 5 client (section
//! 3.3.2.3.4): the first message on a topic goes out with the topic and a
//! new alias, later ones with the alias and an empty topic, while the
//! client's Topic Alias Maximum (from its CONNECT) has room. Aliases are
//! handed out first come, first served and never replaced: a gateway's
//! topics are few and steady, and a fixed mapping costs no re-sends. A
//! client that offers no maximum (or 0) gets none (MQTT-3.3.2-9). The
//! writer caps the count at `broker.max_topic_alias` too (each alias keeps
//! its topic's name in memory for the connection's life).
//!
//! Owns one connection's mapping (it lives as long as the connection's
//! writer: MQTT-3.3.2-7). Must not encode packets.

use std::collections::HashMap;
use std::sync::Arc;

/// What to put in a PUBLISH for its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRef {
    /// The topic name alone: no alias (3.1.1, none offered, or all used).
    Name,
    /// The topic name and a new alias for it.
    NameAndAlias(u16),
    /// An empty topic name and the alias set before.
    Alias(u16),
}

/// One connection's outgoing aliases.
#[derive(Debug, Default)]
pub struct Aliases {
    max: u16,
    by_topic: HashMap<Arc<str>, u16>,
}

impl Aliases {
    /// For a client whose Topic Alias Maximum is `max`.
    pub fn new(max: u16) -> Aliases {
        Aliases {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// How the next PUBLISH on `topic` names it.
    pub fn refer(&mut self, topic: &Arc<str>) -> TopicRef {
        if let Some(&a) = self.by_topic.get(topic) {
            return TopicRef::Alias(a);
        }
        let next = self.by_topic.len() + 1;
        match u16::try_from(next) {
            Ok(a) if a <= self.max => {
                self.by_topic.insert(topic.clone(), a);
                TopicRef::NameAndAlias(a)
            }
            _ => TopicRef::Name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_go_first_come_up_to_the_clients_maximum() {
        let mut a = Aliases::new(2);
        let (t1, t2, t3): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert_eq!(a.refer(&t1), TopicRef::NameAndAlias(1));
        assert_eq!(a.refer(&t1), TopicRef::Alias(1));
        assert_eq!(a.refer(&t2), TopicRef::NameAndAlias(2));
        assert_eq!(a.refer(&t3), TopicRef::Name, "past the maximum");
        assert_eq!(a.refer(&t3), TopicRef::Name);
        assert_eq!(a.refer(&t2), TopicRef::Alias(2));
        assert_eq!(Aliases::new(0).refer(&t1), TopicRef::Name, "none offered");
    }
}
