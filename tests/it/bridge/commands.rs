//! Commands from upstream across drops and restarts, against a real
//! mosquitto. A QoS 2 command whose exchange a dropped connection
//! interrupts after the gateway's PUBREC: on the next connection of the
//! lasting session the broker sends the PUBREL again (MQTT-4.4.0-1), and
//! the gateway must answer it with PUBCOMP and go on forwarding, not drop
//! every new connection because it no longer knows that packet id. A
//! command sent while the gateway is down arrives after its restart, with
//! readings forwarded at QoS 2 (MQTT-3.1.2-4: the broker keeps it in the
//! session, which the restarted gateway resumes from its first connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::bridge::{READING, SECS, operator_publish, wait_reading};
use crate::support::Gateway;
use crate::support::Sub;
use crate::upstream::{Mosquitto, counter, gateway_yaml, on_own_thread};

/// MQTT control packet type PUBREL (with its fixed flags 0b0010).
const PUBREL: u8 = 0x62;

/// The length of the first whole MQTT packet in `buf`, if it holds one.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 2 + i + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

/// A TCP proxy to `target` that closes the connection, instead of passing
/// it on, at the first PUBREL the broker sends (once over all
/// connections). Counts connections and PUBRELs passed on.
struct CuttingProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// PUBRELs passed on.
    pubrels: tokio::sync::watch::Receiver<usize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CuttingProxy {
    /// Runs on its own thread and runtime, so the test's synchronous waits
    /// do not stall the link.
    fn start(target: u16) -> CuttingProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let (passed, pubrels) = tokio::sync::watch::channel(0usize);
        let passed = Arc::new(passed);
        let cut_done = Arc::new(AtomicUsize::new(0));
        let (c, p) = (connections.clone(), passed);
        let stop = on_own_thread(async move {
            let listener = TcpListener::from_std(std_listener).expect("tokio listener");
            while let Ok((inbound, _)) = listener.accept().await {
                c.fetch_add(1, SeqCst);
                let (p, cut_done) = (p.clone(), cut_done.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = outbound.into_split();
                    let up = tokio::io::copy(&mut in_r, &mut out_w);
                    let down = async {
                        let mut buf = Vec::new();
                        let mut chunk = vec![0u8; 16 * 1024];
                        loop {
                            let n = out_r.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(len) = frame_len(&buf) {
                                if buf[0] == PUBREL {
                                    if cut_done.fetch_add(1, SeqCst) == 0 {
                                        return; // drop both sides, PUBREL not passed on
                                    }
                                    p.send_modify(|n| *n += 1);
                                }
                                let frame: Vec<u8> = buf.drain(..len).collect();
                                if in_w.write_all(&frame).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        CuttingProxy {
            port,
            connections,
            pubrels,
            stop: Some(stop),
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[tokio::test]
async fn a_qos2_command_cut_after_pubrec_completes_on_the_next_connection() {
    let broker = Mosquitto::start_with("log_type all\n");
    let proxy = CuttingProxy::start(broker.port);
    let mut up = Sub::connect(broker.port, &["site/gw1/dev/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let extra =
        "  commands:\n    - { filter: \"site/gw1/+/+/set\", strip_prefix: \"site/\", qos: 2 }";
    let mut gw = Gateway::start(&gateway_yaml(&url, "50ms", extra));
    let mut local = Sub::connect(gw.port, &["gw1/+/+/set"], QoS::ExactlyOnce).await;
    // readings flow once the session is up
    wait_reading(&mut up).await;
    let connected_before = proxy.connections.load(SeqCst);

    let pump = operator_publish(broker.port, "site/gw1/dev/n/set", QoS::ExactlyOnce, "7").await;
    let m = local.wait_topic("gw1/dev/n/set", SECS).await;
    assert_eq!(m.text(), "7");

    // the proxy cut the connection at the broker's PUBREL; the next
    // connection gets it again and must complete the exchange
    let mut pubrels = proxy.pubrels.clone();
    // (the borrow `wait_for` returns is let go at once: it holds the
    // proxy's next count)
    let resent = tokio::time::timeout(SECS, pubrels.wait_for(|n| *n > 0))
        .await
        .map(|r| r.is_ok());
    assert!(
        resent == Ok(true),
        "the broker never sent the PUBREL again; log:\n{}",
        gw.log_text()
    );
    // readings flow again after the cut, on a connection that stays up
    let last = wait_reading(&mut up).await;
    let deadline = tokio::time::Instant::now() + SECS;
    let mut later = false;
    while let Some(m) = up
        .try_next(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m.topic == READING && counter(&m) >= last + 20 {
            later = true;
            break;
        }
    }
    assert!(
        later,
        "readings stopped after the cut; log:\n{}\nbroker log:\n{}",
        gw.log_text(),
        std::fs::read_to_string(broker.dir.path().join("mosquitto.log")).unwrap_or_default()
    );
    let reconnects = proxy.connections.load(SeqCst) - connected_before;
    assert!(
        reconnects <= 2,
        "the uplink reconnected {reconnects} times after one cut (a PUBREL it did not know \
         closes each connection); log:\n{}",
        gw.log_text()
    );
    // the command was handed on once
    let again = local.try_next(Duration::from_millis(500)).await;
    assert!(
        again.is_none(),
        "the command was delivered twice: {:?}",
        again.map(|m| m.text())
    );
    pump.abort();
    assert!(gw.terminate(SECS).success());
}

#[tokio::test]
async fn a_command_sent_while_the_gateway_is_down_arrives_after_the_restart() {
    let broker = Mosquitto::start();
    let mut up = Sub::connect(broker.port, &["site/gw1/#"], QoS::AtLeastOnce).await;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let extra = "  commands:\n    - { filter: \"site/gw1/+/+/set\", strip_prefix: \"site/\" }";
    // readings forwarded at QoS 2: the session is resumed all the same
    let yaml = gateway_yaml(&url, "200ms", extra).replace("qos: 1 }", "qos: 2 }");
    assert!(yaml.contains("qos: 2 }"), "{yaml}");
    let mut gw = Gateway::start(&yaml);
    // a reading upstream: the command subscription was made before it
    wait_reading(&mut up).await;
    gw.kill();

    let pump = operator_publish(broker.port, "site/gw1/dev/n/set", QoS::AtLeastOnce, "9").await;
    // the broker has routed it (to the gateway's stored session too)
    up.wait_topic("site/gw1/dev/n/set", SECS).await;

    let gw = gw.sigkill_and_restart(&[]);
    // the commands stage answers every command it gets on `.../set/result`
    let result = up.wait_topic("site/gw1/dev/n/set/result", SECS).await;
    assert!(
        result.text().contains("\"ok\""),
        "unexpected result {}",
        result.text()
    );
    gw.wait_log("command from upstream", SECS);
    pump.abort();
}
