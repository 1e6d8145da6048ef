use super::*;
use crate::broker::message::Message;
use bytes::Bytes;

/// A row of "0123456789" on topic "t" for client "p": 11 bytes of topic
/// and payload, the client id twice (row and index) and the overhead.
const ROW: u64 = 11 + 2 + ROW_OVERHEAD;

const L: Limits = Limits {
    max_queued_messages: 4,
    max_queued_bytes: 1 << 20,
    max_spooled_bytes: 7 * ROW,
    max_inflight: 2,
    max_client_buffer: 1024,
    max_topic_levels: 200,
    max_subscriptions: 10,
    max_retained_messages: 10,
    max_retained_bytes: 1 << 20,
    max_sessions: 10,
    max_store_bytes: 1 << 20,
    session_expiry: std::time::Duration::from_secs(60),
    connect_timeout: std::time::Duration::from_secs(10),
    max_session_expiry: std::time::Duration::from_secs(60),
    max_topic_alias: 10,
    max_keepalive: None,
    validate_utf8: false,
    receive_maximum: 100,
};

fn d(qos: u8, payload: &'static str) -> Delivery {
    Delivery {
        msg: Message::new(
            "t".into(),
            Bytes::from_static(payload.as_bytes()),
            qos,
            false,
        ),
        qos,
        retain: false,
        seq: 0,
        sub_ids: Vec::new(),
        share: None,
    }
}

fn attached(persistent: bool) -> Session {
    let mut s = Session::new("c".into(), persistent);
    s.attach(Attached {
        generation: 1,
        kick: CancellationToken::new(),
    });
    s
}

fn publishes(out: &[Outgoing]) -> Vec<(u16, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Outgoing::Publish { pkid, dup, .. } => Some((*pkid, *dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clean_session_queue_is_bounded_and_full_hands_the_message_back() {
    let mut s = attached(false);
    for _ in 0..4 {
        assert!(matches!(
            s.offer(d(0, "x"), &L),
            Offer::Queued { durable: false }
        ));
    }
    assert!(matches!(s.offer(d(0, "x"), &L), Offer::Full(_)));
    s.detach();
    assert!(
        matches!(s.offer(d(0, "x"), &L), Offer::Dropped),
        "offline QoS 0 is not queued"
    );
}

#[test]
fn the_in_flight_window_holds_qos_1_back_and_acks_open_it() {
    let mut s = attached(false);
    for p in ["1", "2", "3"] {
        s.offer(d(1, p), &L);
    }
    let mut out = Vec::new();
    s.take(&L, &mut out, 10);
    assert_eq!(publishes(&out), [(1, false), (2, false)], "window of 2");
    assert_eq!(s.acked(1, false), AckIs::Done);
    assert_eq!(
        s.acked(1, false),
        AckIs::Unknown,
        "a second PUBACK finds nothing"
    );
    out.clear();
    s.take(&L, &mut out, 10);
    assert_eq!(publishes(&out), [(3, false)]);
}

#[test]
fn qos_2_goes_sent_released_completed_and_reconnect_resends_with_dup() {
    let mut s = attached(false);
    s.offer(d(2, "a"), &L);
    s.offer(d(1, "b"), &L);
    let mut out = Vec::new();
    s.take(&L, &mut out, 10);
    assert_eq!(s.received(1), AckIs::Done, "PUBREC of the QoS 2 message");
    assert_eq!(
        s.acked(1, false),
        AckIs::WrongKind,
        "a PUBACK does not complete QoS 2"
    );
    s.attach(Attached {
        generation: 2,
        kick: CancellationToken::new(),
    });
    out.clear();
    s.take(&L, &mut out, 10);
    // MQTT-4.4.0-1: PUBREL again for the released one, the other with DUP
    assert!(matches!(out[0], Outgoing::Control(Control::Ack(0x62, 1))));
    assert_eq!(publishes(&out), [(2, true)]);
    assert_eq!(s.acked(1, true), AckIs::Done, "PUBCOMP");
    assert_eq!(s.acked(2, false), AckIs::Done);
    out.clear();
    s.take(&L, &mut out, 10);
    assert!(
        out.is_empty() && s.drained(),
        "all written and acknowledged"
    );
}

#[test]
fn a_persistent_session_spills_to_disk_then_drops_past_its_quota() {
    let mut s = Session::new("p".into(), true);
    for _ in 0..4 {
        assert!(matches!(
            s.offer(d(1, "0123456789"), &L),
            Offer::Queued { durable: true }
        ));
    }
    // past the memory quota: on disk only, up to the quota of 7 rows (of
    // topic, payload, client id and overhead) in memory and on disk
    for _ in 0..3 {
        assert!(matches!(
            s.offer(d(1, "0123456789"), &L),
            Offer::Queued { durable: true }
        ));
    }
    assert!(matches!(s.offer(d(1, "0123456789"), &L), Offer::SpoolFull));
    assert_eq!(s.disk_bytes(), 7 * ROW, "every stored row counted");
    let adds = s
        .ops
        .iter()
        .filter(|o| matches!(o, StoreOp::AddMessage { .. }))
        .count();
    assert_eq!(adds, 7, "every queued or spooled message is stored");
    assert_eq!(s.pending(), 7);
    assert_eq!(s.wants_load(&L), None, "memory queue still full");
}

#[test]
fn a_long_client_id_counts_against_the_spool_quota_with_every_row() {
    let id: String = "x".repeat(60_000);
    let mut s = Session::new(id.as_str().into(), true);
    let l = Limits {
        max_spooled_bytes: 1 << 20,
        ..L
    };
    let mut stored = 0;
    while let Offer::Queued { .. } = s.offer(d(1, "0123456789"), &l) {
        stored += 1;
        assert!(stored < 100, "the quota never bites");
    }
    // a row costs the client id twice: 8 rows of ~120 kB fit 1 MiB
    assert_eq!(stored, 8);
    assert!(s.disk_bytes() <= 1 << 20);
}

#[test]
fn the_control_queue_is_bounded_in_bytes() {
    let mut s = attached(false);
    let mut pushed = 0;
    while s.push_control(Control::PingResp, &L) {
        pushed += 1;
        assert!(pushed < 10_000, "never over the bound");
    }
    assert!(pushed > 0 && pushed * std::mem::size_of::<Control>() <= 1024);
    let mut out = Vec::new();
    s.take(&L, &mut out, 1_000);
    assert!(
        s.push_control(Control::PingResp, &L),
        "taken packets free the bound"
    );
}

#[test]
fn acknowledgements_of_the_wrong_kind_are_told_apart_from_unknown_ids() {
    let mut s = attached(false);
    s.offer(d(1, "a"), &L);
    s.offer(d(2, "b"), &L);
    let mut out = Vec::new();
    s.take(&L, &mut out, 10);
    assert_eq!(s.received(1), AckIs::WrongKind, "PUBREC for QoS 1");
    assert_eq!(s.acked(1, true), AckIs::WrongKind, "PUBCOMP for QoS 1");
    assert_eq!(s.acked(2, true), AckIs::WrongKind, "PUBCOMP before PUBREC");
    assert_eq!(s.acked(9, false), AckIs::Unknown);
    assert_eq!(s.received(9), AckIs::Unknown);
}
