use super::*;
use bytes::Bytes;

const L: Limits = Limits {
    max_queued_messages: 4,
    max_queued_bytes: 1 << 20,
    max_spooled_bytes: 40,
    max_inflight: 2,
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
    assert!(s.acked(1, false));
    assert!(!s.acked(1, false), "a second PUBACK finds nothing");
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
    assert!(s.received(1), "PUBREC of the QoS 2 message");
    assert!(!s.acked(1, false), "a PUBACK does not complete QoS 2");
    s.attach(Attached {
        generation: 2,
        kick: CancellationToken::new(),
    });
    out.clear();
    s.take(&L, &mut out, 10);
    // MQTT-4.4.0-1: PUBREL again for the released one, the other with DUP
    assert!(matches!(out[0], Outgoing::Control(Control::Ack(0x62, 1))));
    assert_eq!(publishes(&out), [(2, true)]);
    assert!(s.acked(1, true), "PUBCOMP");
    assert!(s.acked(2, false));
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
    // past the memory quota: on disk (40 bytes = 3 messages of 11 bytes)
    for _ in 0..3 {
        assert!(matches!(
            s.offer(d(1, "0123456789"), &L),
            Offer::Queued { durable: true }
        ));
    }
    assert!(matches!(s.offer(d(1, "0123456789"), &L), Offer::Dropped));
    let adds = s
        .ops
        .iter()
        .filter(|o| matches!(o, StoreOp::AddMessage { .. }))
        .count();
    assert_eq!(adds, 7, "every queued or spooled message is stored");
    assert_eq!(s.pending(), 7);
    assert_eq!(s.wants_load(&L), None, "memory queue still full");
}
