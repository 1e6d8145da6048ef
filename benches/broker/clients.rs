//! The kinds of client, behind one publisher and one subscriber type: the
//! stock mosquitto command-line clients (`mosquitto_pub -l` fed through its
//! stdin pipe, `mosquitto_sub` printing one line per message) and rumqttc
//! (TCP_NODELAY, in this process), each at MQTT 3.1.1 and at MQTT 5
//! (`-V mqttv5`; rumqttc's `v5` client).

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Nanoseconds since the Unix epoch (the clock `mosquitto_sub -F %U` uses).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// mosquitto_pub -l / mosquitto_sub processes.
    Cli,
    /// rumqttc 0.25 in this process.
    Rumqttc,
    /// mosquitto_pub / mosquitto_sub `-V mqttv5`.
    Cli5,
    /// rumqttc 0.25's MQTT 5 client.
    Rumqttc5,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cli, Kind::Rumqttc, Kind::Cli5, Kind::Rumqttc5];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Cli => "mosquitto_pub/sub",
            Kind::Rumqttc => "rumqttc",
            Kind::Cli5 => "mosquitto_pub/sub v5",
            Kind::Rumqttc5 => "rumqttc v5",
        }
    }

    /// The command-line clients (`mosquitto_pub -l` limits apply).
    pub fn is_cli(self) -> bool {
        matches!(self, Kind::Cli | Kind::Cli5)
    }

    pub fn is_v5(self) -> bool {
        matches!(self, Kind::Cli5 | Kind::Rumqttc5)
    }
}

fn qos5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos_arg(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

fn cli(kind: Kind, bin: &str, port: u16, id: &str, topic: &str, qos: QoS) -> Command {
    let mut c = Command::new(bin);
    if kind.is_v5() {
        c.args(["-V", "mqttv5"]);
    }
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k", "30"])
        .args(["-i", id, "-t", topic, "-q", qos_arg(qos)])
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

fn rumqttc(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(100);
    let (c, mut el) = AsyncClient::new(o, 1000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    (c, el)
}

fn rumqttc5(id: &str, port: u16) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_outgoing_inflight_upper_limit(100);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    rumqttc::v5::AsyncClient::new(o, 1000)
}

pub enum Pub {
    Cli {
        child: Box<Child>,
        stdin: BufWriter<ChildStdin>,
    },
    Rumqttc {
        c: AsyncClient,
        driver: JoinHandle<()>,
        topic: String,
        qos: QoS,
    },
    Rumqttc5 {
        c: rumqttc::v5::AsyncClient,
        driver: JoinHandle<()>,
        topic: String,
        qos: QoS5,
    },
}

impl Pub {
    pub fn connect(kind: Kind, port: u16, id: &str, topic: &str, qos: QoS) -> Pub {
        match kind {
            Kind::Cli | Kind::Cli5 => {
                let mut child = cli(kind, "mosquitto_pub", port, id, topic, qos)
                    .arg("-l")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn mosquitto_pub (apt-get install mosquitto-clients)");
                let stdin = BufWriter::with_capacity(64 * 1024, child.stdin.take().expect("stdin"));
                Pub::Cli {
                    child: Box::new(child),
                    stdin,
                }
            }
            Kind::Rumqttc => {
                let (c, mut el) = rumqttc(id, port);
                let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });
                Pub::Rumqttc {
                    c,
                    driver,
                    topic: topic.to_string(),
                    qos,
                }
            }
            Kind::Rumqttc5 => {
                let (c, mut el) = rumqttc5(id, port);
                let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });
                Pub::Rumqttc5 {
                    c,
                    driver,
                    topic: topic.to_string(),
                    qos: qos5(qos),
                }
            }
        }
    }

    /// Publishes one message (one line for mosquitto_pub); `flush` pushes it
    /// through the pipe at once (paced runs) instead of when the buffer fills.
    pub async fn send(&mut self, payload: Vec<u8>, flush: bool) -> anyhow::Result<()> {
        match self {
            Pub::Cli { stdin, .. } => {
                stdin.write_all(&payload).await?;
                stdin.write_all(b"\n").await?;
                if flush {
                    stdin.flush().await?;
                }
            }
            Pub::Rumqttc { c, topic, qos, .. } => {
                c.publish(topic.as_str(), *qos, false, payload).await?;
            }
            Pub::Rumqttc5 { c, topic, qos, .. } => {
                c.publish(topic.as_str(), *qos, false, payload).await?;
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) {
        if let Pub::Cli { stdin, .. } = self {
            let _ = stdin.flush().await;
        }
    }

    /// Ends the publisher: EOF on mosquitto_pub's stdin (it sends what it
    /// has and disconnects; killed after 10 s), DISCONNECT for rumqttc.
    pub async fn finish(self) {
        let bound = Duration::from_secs(10);
        match self {
            Pub::Cli { mut child, stdin } => {
                drop(stdin);
                if tokio::time::timeout(bound, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            Pub::Rumqttc { c, driver, .. } => {
                let _ = tokio::time::timeout(bound, c.disconnect()).await;
                end_driver(driver).await;
            }
            Pub::Rumqttc5 { c, driver, .. } => {
                let _ = tokio::time::timeout(bound, c.disconnect()).await;
                end_driver(driver).await;
            }
        }
    }
}

/// Lets a publisher's event loop send its DISCONNECT, for up to 2 s.
async fn end_driver(mut driver: JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(2), &mut driver)
        .await
        .is_err()
    {
        driver.abort();
    }
}

pub enum Sub {
    Cli {
        _child: Box<Child>,
        lines: Lines<BufReader<ChildStdout>>,
    },
    Rumqttc {
        _c: AsyncClient,
        el: Box<EventLoop>,
    },
    Rumqttc5 {
        _c: rumqttc::v5::AsyncClient,
        el: Box<rumqttc::v5::EventLoop>,
    },
}

impl Sub {
    pub async fn connect(kind: Kind, port: u16, id: &str, topic: &str, qos: QoS) -> Sub {
        match kind {
            Kind::Cli | Kind::Cli5 => {
                let mut child = cli(kind, "mosquitto_sub", port, id, topic, qos)
                    .args(["-F", "%U %p"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn mosquitto_sub (apt-get install mosquitto-clients)");
                let out = child.stdout.take().expect("stdout");
                Sub::Cli {
                    _child: Box::new(child),
                    lines: BufReader::with_capacity(64 * 1024, out).lines(),
                }
            }
            Kind::Rumqttc => {
                let (c, el) = rumqttc(id, port);
                c.subscribe(topic, qos).await.expect("subscribe request");
                Sub::Rumqttc {
                    _c: c,
                    el: Box::new(el),
                }
            }
            Kind::Rumqttc5 => {
                let (c, el) = rumqttc5(id, port);
                c.subscribe(topic, qos5(qos))
                    .await
                    .expect("subscribe request");
                Sub::Rumqttc5 {
                    _c: c,
                    el: Box::new(el),
                }
            }
        }
    }

    /// The next message's payload and its arrival time (ns since the epoch:
    /// `%U`, stamped by mosquitto_sub itself, or taken here for rumqttc);
    /// None when the client failed or exited.
    pub async fn next(&mut self) -> Option<(Vec<u8>, u64)> {
        match self {
            Sub::Cli { lines, .. } => {
                let line = lines.next_line().await.ok()??;
                let (at, payload) = line.split_once(' ')?;
                let (s, ns) = at.split_once('.')?;
                let at = s.parse::<u64>().ok()? * 1_000_000_000 + ns.parse::<u64>().ok()?;
                Some((payload.as_bytes().to_vec(), at))
            }
            Sub::Rumqttc { el, .. } => loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        return Some((p.payload.to_vec(), now_ns()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("rumqttc subscriber: {e}");
                        return None;
                    }
                }
            },
            Sub::Rumqttc5 { el, .. } => loop {
                match el.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) => {
                        return Some((p.payload.to_vec(), now_ns()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("rumqttc v5 subscriber: {e}");
                        return None;
                    }
                }
            },
        }
    }
}
