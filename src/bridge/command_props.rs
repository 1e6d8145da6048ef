//! Commands from an MQTT 5 uplink that carry request/response properties
//! (response topic, correlation data, user properties):
//! published locally through the broker handle with them, because the
//! local publish queue (`reading::Publish`) carries none. The forwarder
//! hands them over here (`forward/commands.rs`) and acknowledges them
//! upstream once they are queued.
//!
//! Owns the queue of such commands and the task that publishes them.
//! Must not touch the outbox or the upstream connection.

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::broker::BrokerHandle;
use crate::reading::Publish;

/// Commands with properties that wait for the local broker, at most
/// (past it one is dropped and counted, like a full local queue).
pub const CAPACITY: usize = 64;

/// The request/response properties a command is published with locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestProps {
    pub response_topic: Option<String>,
    pub correlation_data: Option<bytes::Bytes>,
    pub user: Vec<(String, String)>,
}

/// A command and the properties it is published with.
pub type WithProps = (Publish, RequestProps);

/// The properties a local subscriber gets with a command: those of the
/// upstream PUBLISH, its response topic without the `commands` entry's
/// `strip_prefix` (so a local reply on it goes back up through a
/// `forward` entry with that prefix); `None` when it has none of them.
pub fn local_props(p: Option<&PublishProperties>, strip_prefix: &str) -> Option<RequestProps> {
    let p = p?;
    let props = RequestProps {
        response_topic: p.response_topic.as_ref().map(|t| {
            t.strip_prefix(strip_prefix)
                .filter(|s| !s.is_empty())
                .unwrap_or(t)
                .to_string()
        }),
        correlation_data: p.correlation_data.clone(),
        user: p.user_properties.clone(),
    };
    let none =
        props.response_topic.is_none() && props.correlation_data.is_none() && props.user.is_empty();
    (!none).then_some(props)
}

/// Starts the task that publishes what `rx` brings through `broker`; it
/// ends when every sender is gone.
pub fn start(broker: BrokerHandle) -> (mpsc::Sender<WithProps>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<WithProps>(CAPACITY);
    let task = tokio::spawn(async move {
        while let Some((p, props)) = rx.recv().await {
            let topic = p.topic.clone();
            let RequestProps {
                response_topic,
                correlation_data,
                user,
            } = props;
            if !broker
                .publish_request(p, response_topic, correlation_data, user)
                .await
            {
                warn!(%topic, "uplink: a command's local topic is not a valid topic name; dropped");
            }
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_topic_loses_the_commands_prefix() {
        let p = PublishProperties {
            response_topic: Some("site/gw1/replies/7".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"id-7")),
            ..PublishProperties::default()
        };
        let l = local_props(Some(&p), "site/").expect("props");
        assert_eq!(l.response_topic.as_deref(), Some("gw1/replies/7"));
        assert_eq!(l.correlation_data.as_deref(), Some(&b"id-7"[..]));
        assert!(local_props(Some(&PublishProperties::default()), "site/").is_none());
        assert!(local_props(None, "site/").is_none());
    }
}
