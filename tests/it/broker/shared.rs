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
