//! The embedded broker as MQTT clients see it, one module per area of MQTT
//! 3.1.1: CONNECT/CONNACK and keep-alive (`connect`), protocol violations
//! (`validation`), QoS (`qos`), topics and UNSUBSCRIBE (`topics`), retained
//! messages (`retained`), sessions and wills (`sessions`), `$SYS` (`sys`),
//! authentication (`auth`), ACLs (`acl`), persistence across SIGKILL
//! (`persistence`), the TLS and websocket listeners (`listeners`), limits
//! and heavy clients (`abuse`, `load`), malformed input (`malformed`), and
//! Python paho-mqtt (`paho`). Clients are real: rumqttc, mosquitto_pub/sub,
//! paho-mqtt, and a raw MQTT codec (`raw`) where a test must control every
//! byte. Each test names the normative statement (MQTT-x.y.z-n) it checks.

mod abuse;
mod acl;
mod agree;
mod auth;
mod client5;
mod connect;
mod exposure;
mod limits;
mod listeners;
mod load;
mod malformed;
mod mqtt5;
mod paho;
mod persist5;
mod persistence;
mod qos;
pub mod raw;
mod retained;
mod sessions;
mod shared;
mod sys;
mod topics;
mod validation;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

pub const SECS: Duration = Duration::from_secs(10);

/// A gateway config with no devices; each line of `broker_extra` (flow-style
/// YAML, one key a line) is added under `broker:`.
pub fn yaml(broker_extra: &str) -> String {
    let extra: String = broker_extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {}\n", l.trim()))
        .collect();
    format!(
        "gateway:\n  id: gw-b\n  data_dir: \"{{data_dir}}\"\nbroker:\n  listen: \"127.0.0.1:{{port}}\"\n{extra}devices: []\n"
    )
}

/// A rumqttc client whose event loop runs in a task; events (or the error
/// that ended the loop) arrive on a channel. The loop never reconnects.
pub struct Client {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and waits for CONNACK; `Err` carries the connection error.
    pub async fn try_connect(opts: MqttOptions) -> Result<(Client, bool), String> {
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(e) => {
                        if tx.send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let deadline = tokio::time::Instant::now() + SECS;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Ok(Event::Incoming(Packet::ConnAck(ack))))) => {
                    return Ok((Client { client, rx, task }, ack.session_present));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err("event loop ended".into()),
                Err(_) => return Err("no CONNACK within 10s".into()),
            }
        }
    }

    pub async fn connect(opts: MqttOptions) -> Client {
        match Self::try_connect(opts).await {
            Ok((c, _)) => c,
            Err(e) => panic!("client could not connect: {e}"),
        }
    }

    /// The first incoming packet matching `pred`, or panic after `within`.
    pub async fn wait_incoming(
        &mut self,
        within: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Packet {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(Event::Incoming(p)))) if pred(&p) => return p,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("connection ended: {e}"),
                Ok(None) => panic!("event loop ended"),
                Err(_) => panic!("no matching packet within {within:?}"),
            }
        }
    }

    /// Incoming publishes that arrive within `within`.
    pub async fn publishes_within(&mut self, within: Duration) -> Vec<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
                out.push(p);
            }
        }
        out
    }

    /// Waits until the connection ends; the error text, or panic after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return e,
                Ok(None) => return "event loop ended".into(),
                Err(_) => panic!("connection still open after {within:?}"),
            }
        }
    }

    /// Ends the connection without DISCONNECT (the socket is just dropped).
    pub async fn drop_abruptly(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Sends DISCONNECT and waits for the event loop to end.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue disconnect");
        let _ = self.wait_closed(SECS).await;
    }
}

impl Client {
    /// SUBSCRIBE and wait for its SUBACK; the return codes.
    pub async fn subscribe_acked(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue subscribe");
        match self
            .wait_incoming(SECS, |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(a) => a.return_codes,
            _ => unreachable!(),
        }
    }

    /// PUBLISH and, for QoS 1/2, wait for its PUBACK / PUBCOMP.
    pub async fn publish_acked(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.to_string())
            .await
            .expect("queue publish");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_incoming(SECS, |p| matches!(p, Packet::PubAck(_)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.wait_incoming(SECS, |p| matches!(p, Packet::PubComp(_)))
                    .await;
            }
        }
    }
}

/// QoS from its number.
pub fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A mosquitto client tool's arguments for the broker at 127.0.0.1:`port`,
/// followed by `rest`.
pub fn local_args<'a>(port: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-h", "127.0.0.1", "-p", port];
    args.extend_from_slice(rest);
    args
}

/// Starts a long-running mosquitto client tool (killed on drop); stdout piped.
pub fn mosquitto_spawn(tool: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

/// Waits (bounded) for a spawned tool; (status ok, stdout, stderr).
pub async fn mosquitto_wait(
    child: tokio::process::Child,
    within: Duration,
) -> (bool, String, String) {
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("mosquitto tool did not finish within {within:?}"))
        .expect("wait for mosquitto tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Options for a client id on the broker at `port` (keep-alive 30 s, 1 MiB packets).
pub fn opts(id: &str, port: u16) -> MqttOptions {
    crate::support::options(id, port)
}

/// Runs a mosquitto client tool to completion with a deadline; (status ok, stdout, stderr).
pub async fn mosquitto(tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        SECS,
        tokio::process::Command::new(tool)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} {args:?} did not finish within 10s"))
    .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
