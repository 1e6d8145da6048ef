//! Sparkplug B topic names (`spBv1.0/{group}/{type}/{node}[/{device}]`,
//! 3.0's `spBv1.0/STATE/{host}`) and the reading of the command topics the
//! node subscribes to.
//!
//! Owns [`Ids`] and the topic strings. Must not know payloads.

/// The namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";

/// The node's identity in topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub group: String,
    pub node: String,
}

/// A command addressed to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTopic<'a> {
    Node,
    Device(&'a str),
}

impl Ids {
    /// `spBv1.0/{group}/{kind}/{node}`: NBIRTH, NDEATH, NDATA, NCMD.
    pub fn node_topic(&self, kind: &str) -> String {
        format!("{NAMESPACE}/{}/{kind}/{}", self.group, self.node)
    }

    /// `spBv1.0/{group}/{kind}/{node}/{device}`: DBIRTH, DDEATH, DDATA, DCMD.
    pub fn device_topic(&self, kind: &str, device: &str) -> String {
        format!("{NAMESPACE}/{}/{kind}/{}/{device}", self.group, self.node)
    }

    /// The filters of the commands to this node.
    pub fn command_filters(&self) -> [String; 2] {
        [self.node_topic("NCMD"), self.device_topic("DCMD", "+")]
    }

    /// What `topic` addresses, when it is a command to this node.
    pub fn command<'a>(&self, topic: &'a str) -> Option<CommandTopic<'a>> {
        let rest = topic
            .strip_prefix(NAMESPACE)?
            .strip_prefix('/')?
            .strip_prefix(self.group.as_str())?
            .strip_prefix('/')?;
        if let Some(node) = rest.strip_prefix("NCMD/") {
            return (node == self.node).then_some(CommandTopic::Node);
        }
        let rest = rest
            .strip_prefix("DCMD/")?
            .strip_prefix(self.node.as_str())?
            .strip_prefix('/')?;
        (!rest.is_empty() && !rest.contains('/')).then_some(CommandTopic::Device(rest))
    }
}

/// `spBv1.0/STATE/{host}`: the primary host application's state (3.0).
pub fn state_topic(host: &str) -> String {
    format!("{NAMESPACE}/STATE/{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_topics_are_read_for_this_node_only() {
        let ids = Ids {
            group: "g".into(),
            node: "n".into(),
        };
        assert_eq!(ids.node_topic("NBIRTH"), "spBv1.0/g/NBIRTH/n");
        assert_eq!(ids.device_topic("DDATA", "d"), "spBv1.0/g/DDATA/n/d");
        assert_eq!(ids.command("spBv1.0/g/NCMD/n"), Some(CommandTopic::Node));
        assert_eq!(
            ids.command("spBv1.0/g/DCMD/n/plc"),
            Some(CommandTopic::Device("plc"))
        );
        for other in [
            "spBv1.0/g/NCMD/m",
            "spBv1.0/h/NCMD/n",
            "spBv1.0/g/DCMD/n/a/b",
            "spBv1.0/g/DCMD/n/",
        ] {
            assert_eq!(ids.command(other), None, "{other}");
        }
        assert_eq!(state_topic("scada"), "spBv1.0/STATE/scada");
    }
}
