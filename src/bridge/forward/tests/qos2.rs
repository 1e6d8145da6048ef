//! QoS 2 and packet ids in the forwarder, against the mock upstream: the
//! PUBREL waits for the committed `released` mark, marks hold only while
//! the session was kept, and a packet id still taken makes its row wait.

use tokio::sync::watch;

use super::super::window::Marks;
use super::{rig, row};
use crate::bridge::outbox::Stored;
use crate::bridge::upstream::{ROW_PKIDS, Report, row_pkid};

fn qos2_row(id: i64, released: bool) -> Stored {
    Stored {
        qos: 2,
        released,
        ..row(id, 10)
    }
}

#[tokio::test]
async fn a_qos2_pubrel_waits_for_the_released_mark_to_be_committed() {
    let mut r = rig("").await;
    let (marked, rx) = watch::channel(0);
    r.f.progress.released = rx;
    r.up(true);
    r.st.cursor.ready.push_back(qos2_row(5, false));
    r.st.cursor.ready.push_back(qos2_row(6, false));
    r.f.fill(&mut r.st);
    r.report(Report::Received(6));
    r.report(Report::Received(5));
    assert_eq!(r.st.marks, vec![6, 5], "marks in PUBREC order");
    assert!(
        r.f.client.released.borrow().is_empty(),
        "no PUBREL before the mark"
    );
    r.st.marks_sent = 2;
    r.st.marks.clear();
    // the writer committed the first mark only
    marked.send_replace(1);
    let done = *r.f.progress.released.borrow();
    r.f.release_marked(&mut r.st, done);
    assert_eq!(*r.f.client.released.borrow(), vec![6]);
    r.f.release_marked(&mut r.st, 2);
    assert_eq!(*r.f.client.released.borrow(), vec![6, 5]);
    assert_eq!(
        r.st.used(),
        3,
        "both hold their slots until PUBCOMP (and `online`)"
    );
    r.report(Report::Completed(6));
    assert_eq!(r.st.acks, vec![(6, 20)]);
}

#[tokio::test]
async fn a_marked_row_gets_its_pubrel_only_when_the_session_was_kept() {
    // a restart: the first connection finds the session
    let mut r = rig("").await;
    r.up(true);
    assert_eq!(r.st.marks_view, Marks::Trusted);
    r.st.cursor.ready.push_back(qos2_row(40, true));
    r.st.cursor.ready.push_back(qos2_row(41, false));
    r.f.fill(&mut r.st);
    assert_eq!(
        *r.f.client.released.borrow(),
        vec![40],
        "PUBREL, no PUBLISH"
    );
    let published: Vec<u16> = r.f.client.published.borrow().iter().map(|p| p.3).collect();
    assert_eq!(
        published[1..],
        [41],
        "the other row is published again, same id"
    );
    // the broker lost the session meanwhile: marks no longer hold
    r.report(Report::Down);
    r.up(false);
    assert_eq!(r.st.marks_view, Marks::Ignored);
    r.st.cursor.ready.clear();
    r.st.cursor.ready.push_back(qos2_row(40, true));
    r.f.fill(&mut r.st);
    assert_eq!(r.f.client.released.borrow().len(), 1);
    assert_eq!(r.f.client.published.borrow().last().map(|p| p.3), Some(40));
}

#[tokio::test]
async fn a_session_loss_while_marks_are_on_their_way_keeps_the_count_in_line() {
    let mut r = rig("").await;
    r.up(true);
    r.st.cursor.ready.push_back(qos2_row(7, false));
    r.f.fill(&mut r.st);
    r.report(Report::Received(7));
    r.report(Report::Down);
    r.up(false);
    assert_eq!(
        r.st.releasing.len(),
        1,
        "a placeholder keeps the writer's count"
    );
    // row 7 is sent again as a new message, and row 8 after it
    r.st.cursor.ready.clear();
    r.st.cursor.ready.push_back(qos2_row(7, true));
    r.st.cursor.ready.push_back(qos2_row(8, false));
    r.f.fill(&mut r.st);
    r.report(Report::Received(8));
    // the writer confirms the stale mark of 7: no PUBREL for anything yet
    r.f.release_marked(&mut r.st, 1);
    assert!(r.f.client.released.borrow().is_empty());
    r.f.release_marked(&mut r.st, 2);
    assert_eq!(*r.f.client.released.borrow(), vec![8]);
}

#[tokio::test]
async fn a_row_whose_packet_id_is_still_taken_waits() {
    let mut r = rig("").await;
    r.up(true);
    let old = 3;
    let new = old + i64::from(ROW_PKIDS);
    assert_eq!(row_pkid(old), row_pkid(new));
    r.send(&[old, new]);
    assert_eq!(
        r.f.client.published.borrow().len(),
        2,
        "`online` and the old row"
    );
    assert_eq!(r.st.cursor.ready.front().map(|r| r.id), Some(new));
    r.puback(row_pkid(old));
    r.f.fill(&mut r.st);
    assert_eq!(r.f.client.published.borrow().len(), 3);
}
