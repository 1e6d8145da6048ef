//! The forwarder's transitions against a mock upstream client: no broker,
//! no network; a real (temporary) outbox only for the read pool.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rumqttc::QoS;
use tokio::sync::{mpsc, watch};

use super::window::{Mode, State, Tracked};
use super::{Forwarder, Upstream};
use crate::bridge::config::{Synchronous, UplinkConfig};
use crate::bridge::counters::Counters;
use crate::bridge::cursor::Cursor;
use crate::bridge::outbox::{self, Progress, Stored, WriteCmd};
use crate::bridge::upstream::{OTHER_PKIDS, Outgoing, Report, Resend, row_pkid};
use crate::log_throttle::LogThrottle;

const STATUS: &str = "s/gw/status";

/// Records every request; refuses none.
#[derive(Default)]
pub(super) struct Mock {
    /// Topic, QoS, payload size and packet id of each publish.
    published: RefCell<Vec<(String, QoS, usize, u16)>>,
    /// The MQTT 5 properties and retain flag of each publish.
    props: RefCell<Vec<(Option<rumqttc::v5::mqttbytes::v5::PublishProperties>, bool)>>,
    released: RefCell<Vec<u16>>,
    subscribed: RefCell<Vec<String>>,
    disconnects: RefCell<usize>,
    acked: RefCell<Vec<u16>>,
}

impl Upstream for Mock {
    fn publish(&self, o: Outgoing) -> bool {
        self.props.borrow_mut().push((o.properties, o.retain));
        self.published
            .borrow_mut()
            .push((o.topic, o.qos, o.payload.len(), o.pkid));
        true
    }
    fn release(&self, pkid: u16, _key: i64) -> bool {
        self.released.borrow_mut().push(pkid);
        true
    }
    fn subscribe(&self, filter: String, _qos: QoS) -> bool {
        self.subscribed.borrow_mut().push(filter);
        true
    }
    fn disconnect(&self) -> bool {
        *self.disconnects.borrow_mut() += 1;
        true
    }
    fn ack(&self, publish: &rumqttc::v5::mqttbytes::v5::Publish) -> bool {
        self.acked.borrow_mut().push(publish.pkid);
        true
    }
}

/// The link's session: which packet ids were taken out.
#[derive(Default)]
struct Queue(Vec<u16>);

impl Resend for Queue {
    fn forget_publish(&mut self, pkid: u16) -> bool {
        self.0.push(pkid);
        true
    }
}

pub(super) struct Rig {
    pub(super) f: Forwarder<Mock>,
    pub(super) st: State,
    queue: Queue,
    _writer: mpsc::Receiver<WriteCmd>,
    _dir: tempfile::TempDir,
}

pub(super) async fn rig(extra: &str) -> Rig {
    let yaml = format!(
        "url: mqtt://h\nforward: [{{ filter: \"gw/#\", prefix: \"s/\", qos: 1 }}]\n\
         commands: [{{ filter: \"s/gw/+/set\", strip_prefix: \"s/\" }}]\n{extra}"
    );
    let cfg: UplinkConfig = serde_yaml_ng::from_str(&yaml).expect("yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, _conn) = outbox::open(dir.path(), Synchronous::Full)
        .await
        .expect("open");
    let (writer, writer_rx) = mpsc::channel(16);
    let progress = Progress {
        committed: watch::channel(0).1,
        deleted: watch::channel(0).1,
        released: watch::channel(0).1,
        in_flight: Default::default(),
    };
    let st = State::new(Cursor::new(cfg.buffer.drain));
    let f = Forwarder {
        cfg: Arc::new(cfg),
        gateway: "gw".into(),
        client: Mock::default(),
        pool,
        writer,
        progress,
        live: mpsc::channel(1).1,
        commands: None,
        command_props: None,
        counters: Arc::new(Counters::default()),
        flush: tokio::sync::watch::channel(None).1,
        behind: None,
    };
    Rig {
        f,
        st,
        queue: Queue::default(),
        _writer: writer_rx,
        _dir: dir,
    }
}

pub(super) fn row(id: i64, payload: usize) -> Stored {
    Stored {
        id,
        topic: "s/gw/dev/n".into(),
        payload: bytes::Bytes::from(vec![b'x'; payload]),
        qos: 1,
        retain: false,
        created_ms: 0,
        size: 10 + payload as i64,
        attempts: 0,
        released: false,
        expiry_s: 0,
        props: None,
    }
}

impl Rig {
    pub(super) fn report(&mut self, r: Report) {
        self.f.on_report(&mut self.queue, r, &mut self.st, STATUS);
    }
    fn up(&mut self, session_present: bool) {
        self.report(Report::Up {
            session_present,
            limits: crate::bridge::upstream::Limits::default(),
        });
    }
    fn puback(&mut self, pkid: u16) {
        self.report(Report::Acked(pkid));
    }
    /// The packet id of the `n`th publish so far.
    fn pkid(&self, n: usize) -> u16 {
        self.f.client.published.borrow()[n].3
    }
    /// Rows `ids` read ahead and handed out by `fill`.
    fn send(&mut self, ids: &[i64]) {
        for &id in ids {
            self.st.cursor.ready.push_back(row(id, 10));
        }
        self.f.fill(&mut self.st);
    }
}

#[tokio::test]
async fn a_connect_goes_live_subscribes_commands_and_says_online() {
    let mut r = rig("").await;
    assert_eq!(r.st.mode, Mode::Disconnected);
    r.up(false);
    assert_eq!(r.st.mode, Mode::Live);
    assert_eq!(
        *r.f.client.subscribed.borrow(),
        vec!["s/gw/+/set".to_string()]
    );
    let published = r.f.client.published.borrow();
    assert_eq!(published[0].0, STATUS);
    let pkid = published[0].3;
    assert!(OTHER_PKIDS.contains(&pkid), "{pkid}");
    assert_eq!(r.st.inflight.get(&pkid), Some(&Tracked::Untracked));
}

#[tokio::test]
async fn acknowledged_rows_go_to_the_writer_in_their_window_slots() {
    let mut r = rig("").await;
    r.up(true);
    r.send(&[7, 8, 9]);
    assert_eq!(r.f.client.published.borrow().len(), 4);
    // each row goes with the packet id of its row id
    let ids: Vec<u16> = (1..4).map(|n| r.pkid(n)).collect();
    assert_eq!(ids, vec![row_pkid(7), row_pkid(8), row_pkid(9)]);
    assert_eq!(ids, vec![7, 8, 9]);
    r.puback(8);
    assert_eq!(r.st.acks, vec![(8, 20)]);
    // acknowledged but not deleted: still holds its window slot
    assert_eq!(r.st.used(), 4);
    let online = r.pkid(0);
    r.puback(online);
    assert_eq!(r.st.acks.len(), 1, "the status message deletes no row");
}

#[tokio::test]
async fn a_drop_blames_the_oldest_row_and_max_attempts_gives_it_up() {
    let mut r = rig("max_attempts: 2\n").await;
    r.up(true);
    r.send(&[10, 11]);
    let online = r.pkid(0);
    r.puback(online);
    r.report(Report::Down);
    assert_eq!(r.st.mode, Mode::Disconnected);
    let f = std::mem::take(&mut r.st.failures);
    assert_eq!((f.len(), f[0].id, f[0].attempts), (1, 10, 1));
    assert!(f[0].dead.is_none());
    // a failed reconnect is no try
    r.report(Report::Down);
    assert!(r.st.failures.is_empty());
    r.up(true);
    r.report(Report::Down);
    let f = std::mem::take(&mut r.st.failures);
    assert_eq!((f[0].id, f[0].attempts), (10, 2));
    assert!(f[0].dead.as_deref().is_some_and(|d| d.contains("2 times")));
    assert_eq!(r.queue.0, vec![10], "taken out of the link's session");
    assert!(!r.st.inflight.contains_key(&10));
    assert!(
        r.st.inflight.contains_key(&11),
        "the row behind stays in flight"
    );
}

#[tokio::test]
async fn a_row_over_max_packet_size_goes_dead_unsent() {
    let mut r = rig("max_packet_size: 1KiB\n").await;
    r.up(true);
    r.st.cursor.ready.push_back(row(5, 2000));
    r.st.cursor.ready.push_back(row(6, 10));
    r.f.fill(&mut r.st);
    let sent: Vec<usize> = r.f.client.published.borrow().iter().map(|p| p.2).collect();
    assert_eq!(sent, vec![6, 10], "`online`, then only the small row");
    assert_eq!(r.st.failures[0].id, 5);
    assert!(r.st.failures[0].dead.is_some());
}

#[tokio::test]
async fn shutdown_flushes_when_live_and_stops_when_down() {
    let until = tokio::time::Instant::now();
    let mut r = rig("").await;
    r.f.on_shutdown(&mut r.st, until);
    assert_eq!(r.st.mode, Mode::Stopping { connected: false });

    let mut r = rig("").await;
    r.up(true);
    r.f.on_shutdown(&mut r.st, until);
    assert_eq!(r.st.mode, Mode::Flushing { until });
    assert!(r.f.commands.is_none(), "no commands taken while stopping");
    r.f.after_turn(&mut r.st, false);
    assert_eq!(r.st.mode, Mode::Flushing { until }, "not caught up yet");
    r.f.after_turn(&mut r.st, true);
    assert_eq!(r.st.mode, Mode::Stopping { connected: true });

    let mut r = rig("").await;
    r.up(true);
    let online = r.pkid(0);
    r.puback(online);
    r.f.on_shutdown(&mut r.st, until);
    r.st.cursor.caught_up = true;
    r.f.after_turn(&mut r.st, false);
    assert_eq!(r.st.mode, Mode::Stopping { connected: true }, "caught up");

    let mut r = rig("").await;
    r.up(true);
    r.f.on_shutdown(&mut r.st, until);
    r.report(Report::Down);
    assert_eq!(r.st.mode, Mode::Stopping { connected: false });
}

#[tokio::test]
async fn live_messages_go_out_only_while_connected() {
    let mut r = rig("").await;
    let mut log = LogThrottle::new(std::time::Duration::from_secs(10));
    let p = crate::reading::Publish {
        topic: "s/gw/fast".into(),
        payload: bytes::Bytes::from_static(b"1"),
        qos: crate::reading::Qos::default(),
        retain: false,
    };
    r.f.send_live(p.clone(), &mut r.st, &mut log);
    assert_eq!(
        r.f.counters
            .live_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    r.up(true);
    r.f.send_live(p, &mut r.st, &mut log);
    assert_eq!(
        r.f.client.published.borrow().last().map(|p| p.0.as_str()),
        Some("s/gw/fast")
    );
}

fn command(pkid: u16, payload: &'static str) -> Report {
    let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
        "s/gw/valve/set",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        payload,
        None,
    );
    p.pkid = pkid;
    Report::Command(Box::new(p))
}

#[tokio::test]
async fn a_command_is_acknowledged_upstream_only_once_handed_on() {
    let mut r = rig("").await;
    let (tx, mut local) = mpsc::channel(1);
    r.f.commands = Some(tx.clone());
    r.up(false);
    r.report(command(1, "a"));
    assert_eq!(
        *r.f.client.acked.borrow(),
        vec![1],
        "room: handed on, acknowledged"
    );
    // the local queue is full: the next two wait, unacknowledged, in order
    r.report(command(2, "b"));
    r.report(command(3, "c"));
    assert_eq!(*r.f.client.acked.borrow(), vec![1]);
    assert_eq!(r.st.commands.len(), 2);
    assert_eq!(local.recv().await.expect("a").payload, "a");
    let permit = tx.reserve().await.expect("room");
    r.f.command_handed_on(&mut r.st, permit);
    assert_eq!(*r.f.client.acked.borrow(), vec![1, 2]);
    let b = local.recv().await.expect("b");
    assert_eq!(
        (b.topic.as_str(), &b.payload[..]),
        ("gw/valve/set", &b"b"[..])
    );
    // the connection drops: the waiting command is handed on later but
    // not acknowledged on the new connection (the broker sends it again)
    r.report(Report::Down);
    let permit = tx.reserve().await.expect("room");
    r.f.command_handed_on(&mut r.st, permit);
    assert_eq!(*r.f.client.acked.borrow(), vec![1, 2]);
    assert_eq!(local.recv().await.expect("c").payload, "c");
    assert_eq!(r.f.counters.commands_dropped.load(Relaxed), 0);
}

#[tokio::test]
async fn commands_waiting_at_the_stop_are_counted_and_not_acknowledged() {
    let mut r = rig("").await;
    let (tx, _local) = mpsc::channel(1);
    r.f.commands = Some(tx);
    r.up(false);
    r.report(command(1, "a"));
    r.report(command(2, "b"));
    r.f.on_shutdown(&mut r.st, tokio::time::Instant::now());
    r.report(command(3, "c"));
    assert_eq!(*r.f.client.acked.borrow(), vec![1]);
    assert_eq!(r.f.counters.commands_dropped.load(Relaxed), 2);
    assert!(r.st.commands.is_empty());
}

#[tokio::test]
async fn a_commit_just_before_the_shutdown_is_flushed_not_left_behind() {
    let mut r = rig("").await;
    let (committed, rx) = watch::channel(0);
    r.f.progress.committed = rx;
    r.up(true);
    r.st.inflight.clear(); // `online` acknowledged
    r.st.cursor.caught_up = true;
    // the last message (`offline`) is committed; the shutdown wins the race
    // against the loop's wake-up for it
    committed.send_replace(7);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    r.f.on_shutdown(&mut r.st, until);
    r.f.after_turn(&mut r.st, false);
    assert_eq!(r.st.mode, Mode::Flushing { until }, "row 7 not read yet");
    assert!(!r.st.cursor.caught_up);
    // read and sent: then the flush is done
    r.f.progress.committed.borrow_and_update();
    r.st.cursor.caught_up = true;
    r.f.after_turn(&mut r.st, false);
    assert_eq!(r.st.mode, Mode::Stopping { connected: true });
    drop(committed);
}

mod qos2;
mod v5;
