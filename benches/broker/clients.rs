//! The two kinds of client, behind one publisher and one subscriber type:
//! the stock mosquitto command-line clients (`mosquitto_pub -l` fed through
//! its stdin pipe, `mosquitto_sub` printing one line per message) and
//! rumqttc (TCP_NODELAY, in this process).

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Cli => "mosquitto_pub/sub",
            Kind::Rumqttc => "rumqttc",
        }
    }
}

fn qos_arg(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

fn cli(bin: &str, port: u16, id: &str, topic: &str, qos: QoS) -> Command {
    let mut c = Command::new(bin);
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
}

impl Pub {
    pub fn connect(kind: Kind, port: u16, id: &str, topic: &str, qos: QoS) -> Pub {
        match kind {
            Kind::Cli => {
                let mut child = cli("mosquitto_pub", port, id, topic, qos)
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
            Pub::Rumqttc { c, mut driver, .. } => {
                let _ = tokio::time::timeout(bound, c.disconnect()).await;
                if tokio::time::timeout(Duration::from_secs(2), &mut driver)
                    .await
                    .is_err()
                {
                    driver.abort();
                }
            }
        }
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
}

impl Sub {
    pub async fn connect(kind: Kind, port: u16, id: &str, topic: &str, qos: QoS) -> Sub {
        match kind {
            Kind::Cli => {
                let mut child = cli("mosquitto_sub", port, id, topic, qos)
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
        }
    }
}
