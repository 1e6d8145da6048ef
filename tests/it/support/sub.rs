//! A real MQTT client (rumqttc) that subscribes and collects messages,
//! and the messages it collects.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::free_port;

/// A message as a subscriber received it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

impl Msg {
    fn of(p: &rumqttc::Publish) -> Msg {
        Msg {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic, self.payload
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A real MQTT client (rumqttc) subscribed to some filters.
pub struct Sub {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Messages taken out by `wait_for` but not matched, in arrival order.
    pub seen: Vec<Msg>,
}

/// Connection options for a test client on the embedded broker.
pub fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1024 * 1024, 1024 * 1024);
    o
}

impl Sub {
    /// Connects anonymously and subscribes to `filters` at `qos`; returns once SUBACK arrived.
    pub async fn connect(port: u16, filters: &[&str], qos: QoS) -> Sub {
        Self::connect_with(
            options(&format!("test-sub-{}", free_port()), port),
            filters,
            qos,
        )
        .await
    }

    pub async fn connect_with(opts: MqttOptions, filters: &[&str], qos: QoS) -> Sub {
        let (client, mut el) = AsyncClient::new(opts, 1024);
        for f in filters {
            client.subscribe(*f, qos).await.expect("queue subscribe");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let mut ready_tx = Some(ready_tx);
        let want = filters.len();
        tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == want
                            && let Some(t) = ready_tx.take()
                        {
                            let _ = t.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(Msg::of(&p)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(Err(e.to_string()));
                        }
                        // rumqttc keeps what it read in the same read as
                        // the close (the last messages before a broker
                        // stops) in its queue, and returns the error first
                        for ev in el.state.events.drain(..) {
                            if let Event::Incoming(Packet::Publish(p)) = ev {
                                let _ = tx.send(Msg::of(&p));
                            }
                        }
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("subscriber could not connect: {e}"),
            other => panic!("subscriber got no SUBACK: {other:?}"),
        }
        Sub {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    /// The next message, or panic after `within`.
    pub async fn next(&mut self, within: Duration) -> Msg {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("subscriber connection ended"),
            Err(_) => panic!("no message within {within:?}"),
        }
    }

    /// The next message, or `None` after `within`.
    pub async fn try_next(&mut self, within: Duration) -> Option<Msg> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the first message matching `pred`; others are kept in `seen`.
    pub async fn wait_for(&mut self, within: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        // messages set aside by an earlier wait count too: brokers send
        // retained messages in no particular order
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(m)) => self.seen.push(m),
                Ok(None) => panic!("subscriber connection ended"),
                Err(_) => panic!(
                    "no matching message within {within:?}; saw {} others: {:?}",
                    self.seen.len(),
                    self.seen
                        .iter()
                        .rev()
                        .take(5)
                        .map(|m| (&m.topic, m.text()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for a message on exactly `topic`.
    pub async fn wait_topic(&mut self, topic: &str, within: Duration) -> Msg {
        self.wait_for(within, |m| m.topic == topic).await
    }
}
