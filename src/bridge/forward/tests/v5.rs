//! What an MQTT 5 broker allows and refuses, in the forwarder, against
//! the mock upstream: the Receive Maximum bounds the window, a refusal
//! dead-letters its row without blaming a neighbour, Maximum QoS and
//! Retain Available cap what is sent, a row past its message expiry is
//! deleted unsent, and rows committed before the connection carry the
//! replay marks.

use rumqttc::QoS;

use super::{rig, row};
use crate::bridge::outbox::Stored;
use crate::bridge::upstream::{Limits, Refusal, Report, row_pkid};

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

#[tokio::test]
async fn the_receive_maximum_bounds_the_unacknowledged_messages() {
    let mut r = rig("protocol: 5\ninflight: 100").await;
    r.report(Report::Up {
        session_present: false,
        limits: limits(|l| l.receive_max = 5),
    });
    // `online` holds one of the five
    r.send(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(r.st.unacked(), 5);
    assert_eq!(r.f.client.published.borrow().len(), 5);
    r.report(Report::Acked(row_pkid(1)));
    r.f.fill(&mut r.st);
    assert_eq!(r.st.unacked(), 5, "one acknowledged, one more sent");
}

#[tokio::test]
async fn a_refused_row_is_dead_lettered_with_its_reason_and_nobody_else_is_blamed() {
    let mut r = rig("protocol: 5").await;
    r.up(false);
    r.send(&[1, 2, 3]);
    let refusal = Refusal {
        code: 0x87,
        reason: "(not authorized)".into(),
    };
    r.report(Report::Refused {
        pkid: row_pkid(2),
        refusal,
    });
    assert_eq!(r.st.failures.len(), 1);
    let f = &r.st.failures[0];
    assert_eq!(f.id, 2);
    assert!(
        f.dead.as_deref().is_some_and(|d| d.contains("0x87")),
        "{:?}",
        f.dead
    );
    assert_eq!(r.st.mode, super::super::window::Mode::Live);
    assert!(r.st.inflight.contains_key(&row_pkid(1)));
    assert!(r.st.inflight.contains_key(&row_pkid(3)));
}

#[tokio::test]
async fn maximum_qos_and_retain_available_cap_what_is_sent() {
    let mut r = rig("protocol: 5").await;
    r.report(Report::Up {
        session_present: false,
        limits: limits(|l| {
            l.max_qos = 1;
            l.retain = false;
        }),
    });
    r.st.cursor.ready.push_back(Stored {
        qos: 2,
        retain: true,
        ..row(1, 10)
    });
    r.f.fill(&mut r.st);
    let published = r.f.client.published.borrow();
    let last = published.last().expect("sent");
    assert_eq!(last.1, QoS::AtLeastOnce);
    assert!(!r.f.client.props.borrow().iter().any(|(_, retain)| *retain));
}

#[tokio::test]
async fn a_row_past_its_message_expiry_is_deleted_unsent_and_the_rest_carry_what_is_left() {
    let mut r = rig("protocol: 5").await;
    r.up(false);
    let now = crate::reading::now_ms();
    r.st.cursor.ready.push_back(Stored {
        expiry_s: 10,
        created_ms: now - 11_000,
        ..row(1, 10)
    });
    r.st.cursor.ready.push_back(Stored {
        expiry_s: 3 * 3600,
        created_ms: now - 2 * 3_600_000,
        ..row(2, 10)
    });
    r.f.fill(&mut r.st);
    assert_eq!(
        r.st.acks,
        vec![(1, 20)],
        "the stale row goes to the deletes"
    );
    assert_eq!(
        r.f.counters
            .message_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let props = r.f.client.props.borrow();
    let (p, _) = props.last().expect("row 2 sent");
    let left = p
        .as_ref()
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry");
    assert!((3599..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn rows_committed_before_the_connection_carry_the_replay_marks() {
    let mut r = rig("protocol: 5").await;
    r.up(false);
    // committed (0) when the connection came up: row 1 waited, row 5 did not
    r.st.live_from = 5;
    r.send(&[1, 5]);
    let props = r.f.client.props.borrow();
    let user = |i: usize| {
        props[i]
            .0
            .as_ref()
            .map(|p| p.user_properties.clone())
            .unwrap_or_default()
    };
    assert_eq!(user(1)[0], ("fieldgate-replay".into(), "1".into()));
    assert!(user(2).is_empty(), "{:?}", user(2));
}
