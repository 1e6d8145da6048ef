//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2,
//! offered to 3.1.1 clients too, as mosquitto does): each message goes to
//! one member of the group in turn, while plain subscribers get every one;
//! retained messages are not sent to a shared subscription.

use std::time::Duration;

use super::raw::{self, Raw};
use super::{SECS, yaml};
use crate::support::Gateway;

#[tokio::test]
async fn a_share_delivers_each_message_to_one_member_in_turn() {
    let gw = Gateway::start(&yaml(""));
    let mut p = Raw::connect(gw.port, "share-pub").await;
    p.send(&raw::publish("work/old", b"retained", 0, true, 0))
        .await;
    let mut a = Raw::connect(gw.port, "member-a").await;
    let mut b = Raw::connect(gw.port, "member-b").await;
    let mut all = Raw::connect(gw.port, "everything").await;
    assert_eq!(a.subscribe(1, "$share/workers/work/+", 1).await, 1);
    assert_eq!(b.subscribe(1, "$share/workers/work/+", 1).await, 1);
    assert_eq!(all.subscribe(1, "work/+", 0).await, 0);
    assert_eq!(all.publish_in(SECS).await.payload, b"retained");
    for i in 0..10u16 {
        p.send(&raw::publish(
            "work/job",
            format!("job-{i}").as_bytes(),
            1,
            false,
            i + 1,
        ))
        .await;
        p.expect(raw::PUBACK, SECS).await;
    }
    let got = |c: Vec<raw::Publish>| -> Vec<String> {
        c.iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    };
    let quiet = Duration::from_millis(500);
    let (ga, gb) = (
        got(a.publishes_until_quiet(quiet).await),
        got(b.publishes_until_quiet(quiet).await),
    );
    assert_eq!(ga.len() + gb.len(), 10, "each job once: {ga:?} {gb:?}");
    assert_eq!((ga.len(), gb.len()), (5, 5), "in turn: {ga:?} {gb:?}");
    assert!(
        !ga.contains(&"retained".to_string()),
        "retained sent to a share"
    );
    assert_eq!(got(all.publishes_until_quiet(quiet).await).len(), 10);
    // a malformed share is refused, the connection stays
    assert_eq!(a.subscribe(2, "$share/nofilter", 1).await, 0x80);
}

/// A member that leaves without acknowledging (its session ends with the
/// connection) does not take its share of the work along: its unacknowledged
/// QoS 1 messages go to another member (the choice documented in
/// docs/design.md; MQTT 5 section 4.8.2 leaves it to the server).
#[tokio::test]
async fn a_leaving_members_unacknowledged_messages_go_to_another_member() {
    let gw = Gateway::start(&yaml(""));
    let mut p = Raw::connect(gw.port, "jobs-pub").await;
    let mut a = Raw::connect(gw.port, "leaver").await;
    let mut b = Raw::connect(gw.port, "stayer").await;
    assert_eq!(a.subscribe(1, "$share/crew/jobs/+", 1).await, 1);
    assert_eq!(b.subscribe(1, "$share/crew/jobs/+", 1).await, 1);
    for i in 0..4u16 {
        let job = format!("job-{i}");
        p.send(&raw::publish("jobs/x", job.as_bytes(), 1, false, i + 1))
            .await;
        p.expect(raw::PUBACK, SECS).await;
    }
    let payloads = |c: Vec<raw::Publish>| -> Vec<String> {
        c.iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    };
    let quiet = Duration::from_millis(400);
    // neither acknowledges
    let left_with = payloads(a.publishes_until_quiet(quiet).await);
    let mut stayed = payloads(b.publishes_until_quiet(quiet).await);
    assert_eq!((left_with.len(), stayed.len()), (2, 2), "in turn");
    drop(a);
    let handed = payloads(b.publishes_until_quiet(Duration::from_secs(2)).await);
    assert_eq!(
        handed, left_with,
        "the leaver's jobs, in order, to the one who stayed"
    );
    stayed.extend(handed);
    stayed.sort();
    assert_eq!(stayed, ["job-0", "job-1", "job-2", "job-3"]);
}
