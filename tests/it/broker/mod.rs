//! The embedded broker as MQTT clients see it: conformance to MQTT 3.1.1
//! (`conformance`), authentication and listeners (`listeners`), limits and
//! heavy clients (`abuse`), malformed input (`malformed`). Clients are real: rumqttc, mosquitto_pub/sub,
//! and a raw MQTT codec (`raw`) where a test must control every byte.
//!
//! Tests that document a gap of rumqttd 0.20 are `#[ignore]`d with the reason;
//! README.md "Embedded broker: MQTT conformance" lists them.

mod abuse;
mod conformance;
mod listeners;
mod malformed;
pub mod raw;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
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
