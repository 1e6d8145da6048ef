//! The node's own session on the upstream broker (`target: uplink`): one
//! MQTT 3.1.1 connection per Sparkplug session, clean, with the session's
//! NDEATH as its will (so bdSeq in the will is the one of the NBIRTH that
//! follows), subscribed to the node's NCMD / DCMD and the primary host's
//! STATE. It is not the bridge's session: Sparkplug asks the node to
//! disconnect when the primary host goes offline, which must not stop the
//! bridge's forwarding; it reuses `uplink:`'s URL, credentials and, for
//! `mqtts://`, its TLS certificates (the bridge's rustls config).
//!
//! Owns [`Endpoint`], [`Session`] and the [`LinkEvent`]s its pump task
//! reports (connected, down, messages, the packet ids of QoS 1 publishes
//! and their PUBACKs). Must not know payloads or history: the task does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tracing::{info, warn};

use super::SparkplugError;
use crate::bridge::UplinkConfig;
use crate::bridge::config::Endpoint as Url;
use crate::bridge::upstream::tls_client_config;
use crate::config::Secret;
use crate::reading::Publish;

/// What the pump reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// CONNACK received; the subscriptions are asked for.
    Connected,
    /// The connection ended (an error, or our DISCONNECT).
    Down(String),
    /// A message on a subscribed topic.
    Message { topic: String, payload: Bytes },
    /// A QoS 1 publish went out with this packet id (in the order asked).
    Sent(u16),
    /// Its PUBACK.
    Acked(u16),
}

/// Where and as whom the node connects.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    client_id: String,
    login: Option<(String, Secret)>,
    keep_alive: Duration,
    /// For `mqtts://`: the bridge's rustls config (`uplink:`'s `ca_file`,
    /// `cert_file`, `key_file`).
    tls: Option<Arc<ClientConfig>>,
}

/// Events a pump may have waiting for the task.
const EVENTS: usize = 256;

impl Endpoint {
    /// `uplink:`'s broker, as client `{client_id}-sparkplug`, over TLS
    /// for `mqtts://` with the same certificates as the bridge.
    pub fn of(cfg: &UplinkConfig, gateway: &str) -> Result<Endpoint, SparkplugError> {
        let url = Url::parse(&cfg.url).map_err(SparkplugError::Uplink)?;
        let tls = if url.tls {
            Some(tls_client_config(cfg).map_err(|e| SparkplugError::Uplink(e.to_string()))?)
        } else {
            None
        };
        let password = match cfg.password_source().map_err(SparkplugError::Uplink)? {
            Some(s) => Some(s.resolve().map_err(SparkplugError::Uplink)?),
            None => None,
        };
        let login = match (&cfg.username, password) {
            (Some(u), p) => Some((u.clone(), p.unwrap_or_else(|| Secret::new(String::new())))),
            (None, _) => None,
        };
        Ok(Endpoint {
            host: url.host,
            port: url.port,
            client_id: format!("{}-sparkplug", cfg.client_id(gateway)),
            login,
            keep_alive: cfg.keep_alive.get(),
            tls,
        })
    }
}

/// One connection: the client to publish with; its pump reports on the
/// channel given to [`Session::connect`].
pub struct Session {
    client: AsyncClient,
}

impl Session {
    /// Connects with `will` (the session's NDEATH) and, once connected,
    /// subscribes to `filters` at QoS 1.
    pub fn connect(
        ep: &Endpoint,
        will: Publish,
        filters: Vec<String>,
        events: mpsc::Sender<LinkEvent>,
    ) -> Session {
        let mut opts = MqttOptions::new(ep.client_id.clone(), ep.host.clone(), ep.port);
        opts.set_keep_alive(ep.keep_alive.max(Duration::from_secs(5)))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                will.topic,
                will.payload,
                QoS::AtLeastOnce,
                false,
            ));
        if let Some((u, p)) = &ep.login {
            opts.set_credentials(u.clone(), p.expose().to_string());
        }
        if let Some(tls) = &ep.tls {
            // rumqttc checks the certificate against the host of the URL
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        let (client, eventloop) = AsyncClient::new(opts, 64);
        tokio::spawn(pump(eventloop, client.clone(), filters, events));
        Session { client }
    }

    /// Publishes `p` at its QoS; `false` when the connection is gone.
    pub async fn publish(&self, p: Publish) -> bool {
        let qos = match p.qos.as_u8() {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        self.client
            .publish(p.topic, qos, p.retain, p.payload)
            .await
            .is_ok()
    }

    /// Ends the session cleanly (no will): after an explicit NDEATH.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// Polls the connection until it ends, reporting what the task needs.
async fn pump(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    events: mpsc::Sender<LinkEvent>,
) {
    loop {
        let ev = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                info!("Sparkplug session connected upstream");
                let subs = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subs) {
                    warn!(error = %e, "Sparkplug subscriptions could not be asked for");
                }
                LinkEvent::Connected
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => LinkEvent::Message {
                topic: p.topic,
                payload: p.payload,
            },
            Ok(Event::Incoming(Incoming::PubAck(a))) => LinkEvent::Acked(a.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => LinkEvent::Sent(pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = events.send(LinkEvent::Down(e.to_string())).await;
                return;
            }
        };
        if events.send(ev).await.is_err() {
            return;
        }
    }
}

/// The channel a session's pump reports on.
pub fn events() -> (mpsc::Sender<LinkEvent>, mpsc::Receiver<LinkEvent>) {
    mpsc::channel(EVENTS)
}
