//! `broker.acl`: per-user read / write / readwrite / deny rules with `%u`
//! and `%c`; deny wins; with rules present, whatever none allows is denied.
//! A denied SUBSCRIBE filter gets return code 0x80 (§3.9.3); a denied
//! PUBLISH is acknowledged and dropped (MQTT-3.3.5-2).

use std::time::Duration;

use rumqttc::QoS;

use super::raw::{self, Raw};
use super::{Client, SECS, opts, yaml};
use crate::support::Gateway;

const QUIET: Duration = Duration::from_millis(500);

const USERS: &[(&str, &str)] = &[("alice", "pw-a"), ("bob", "pw-b"), ("admin", "pw-x")];

fn acl_gateway() -> Gateway {
    let users: Vec<String> = USERS
        .iter()
        .map(|(u, _)| format!("{{ username: {u}, password_env: FG_PW_{u} }}"))
        .collect();
    let cfg = yaml(&format!(
        "users: [{}]\n\
         acl: [{{ user: alice, readwrite: [\"a/#\"], read: [\"shared/#\"], deny: [\"a/secret/#\"] }}, \
               {{ user: bob, write: [\"shared/#\"], read: [\"b/%u/#\"] }}, \
               {{ user: admin, readwrite: [\"#\"] }}, \
               {{ user: \"*\", readwrite: [\"c/%c/#\"] }}]",
        users.join(", ")
    ));
    let env: Vec<(String, String)> = USERS
        .iter()
        .map(|(u, p)| (format!("FG_PW_{u}"), p.to_string()))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with_env(&cfg, &env)
}

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .expect("known user")
        .1
}

/// A raw client logged in as `user`.
async fn login(port: u16, id: &str, user: &str) -> Raw {
    Raw::open(
        port,
        &raw::connect(id, true, 30, Some((user, password(user))), None),
    )
    .await
    .0
}

/// A rumqttc client logged in as `user`.
async fn client(port: u16, id: &str, user: &str) -> Client {
    let mut o = opts(id, port);
    o.set_credentials(user, password(user));
    Client::connect(o).await
}

/// §3.9.3: a denied filter gets 0x80, the others in the same SUBSCRIBE are
/// granted (MQTT-3.8.4-5: one code per filter, in order); deny wins over
/// a matching allow rule; no rule = denied.
#[tokio::test]
async fn denied_subscribe_filters_get_0x80_and_the_others_are_granted() {
    let gw = acl_gateway();
    let mut c = login(gw.port, "acl-sub", "alice").await;
    c.send(&raw::subscribe_raw(
        0x82,
        9,
        &[
            (b"a/x", 1),
            (b"zzz/#", 1),
            (b"a/secret/#", 1),
            (b"shared/y", 0),
            (b"c/acl-sub/#", 2),
        ],
    ))
    .await;
    assert_eq!(
        c.expect(raw::SUBACK, SECS).await,
        [0, 9, 1, 0x80, 0x80, 0, 2]
    );
}

/// MQTT-3.3.5-2: a PUBLISH the client may not make is acknowledged
/// (PUBACK, or the whole QoS 2 flow) and dropped; the connection stays.
#[tokio::test]
async fn denied_publish_is_acknowledged_and_dropped() {
    let gw = acl_gateway();
    let mut admin = client(gw.port, "acl-admin", "admin").await;
    admin.subscribe_acked("#", QoS::AtLeastOnce).await;
    let mut bob = login(gw.port, "acl-bob", "bob").await;
    bob.send(&raw::publish("a/x", b"denied-1", 1, false, 1))
        .await;
    assert_eq!(bob.expect(raw::PUBACK, SECS).await, [0, 1]);
    bob.send(&raw::publish("a/x", b"denied-2", 2, false, 2))
        .await;
    assert_eq!(bob.expect(raw::PUBREC, SECS).await, [0, 2]);
    bob.send(&raw::ack(raw::PUBREL, 2)).await;
    assert_eq!(bob.expect(raw::PUBCOMP, SECS).await, [0, 2]);
    bob.send(&raw::publish("shared/ok", b"allowed", 1, false, 3))
        .await;
    assert_eq!(bob.expect(raw::PUBACK, SECS).await, [0, 3]);
    // in order from one publisher (MQTT-4.6.0-6): nothing denied before "allowed"
    let got: Vec<_> = admin.publishes_within(QUIET * 2).await;
    let payloads: Vec<_> = got
        .iter()
        .filter(|p| p.topic.starts_with("a/") || p.topic.starts_with("shared/"))
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["allowed"]);
}

/// Read rules apply to each message: a subscription granted on `a/#` does
/// not deliver what `deny: a/secret/#` covers (`a/secret` included).
#[tokio::test]
async fn read_rules_filter_each_delivered_message() {
    let gw = acl_gateway();
    let mut alice = login(gw.port, "acl-alice", "alice").await;
    assert_eq!(alice.subscribe(1, "a/#", 1).await, 1);
    let mut admin = client(gw.port, "acl-admin2", "admin").await;
    for t in ["a/secret/x", "a/plain", "a/secret", "a/secretive", "a/end"] {
        admin.publish_acked(t, QoS::AtLeastOnce, false, t).await;
    }
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("a/end") {
        let p = alice.publish_in(SECS).await;
        alice
            .send(&raw::ack(raw::PUBACK, p.pkid.expect("QoS 1")))
            .await;
        got.push(p.topic);
    }
    assert_eq!(
        got,
        ["a/plain", "a/secretive", "a/end"],
        "a/secret/# is denied, and matches a/secret too (MQTT-4.7.1-2)"
    );
}

/// `%u` expands to the user name and `%c` to the client id, in read rules
/// (SUBACK codes) and in write rules (what gets through).
#[tokio::test]
async fn user_and_client_id_patterns_expand() {
    let gw = acl_gateway();
    let mut bob = login(gw.port, "cid-1", "bob").await;
    bob.send(&raw::subscribe_raw(
        0x82,
        4,
        &[
            (b"b/bob/x", 0),
            (b"b/alice/x", 0),
            (b"c/cid-1/#", 0),
            (b"c/cid-2/#", 0),
        ],
    ))
    .await;
    assert_eq!(
        bob.expect(raw::SUBACK, SECS).await,
        [0, 4, 0, 0x80, 0, 0x80]
    );
    let mut admin = client(gw.port, "acl-admin3", "admin").await;
    admin.subscribe_acked("c/#", QoS::AtMostOnce).await;
    bob.send(&raw::publish("c/cid-2/m", b"not-mine", 0, false, 0))
        .await;
    bob.send(&raw::publish("c/cid-1/m", b"mine", 0, false, 0))
        .await;
    let own = bob.publish_in(SECS).await;
    assert_eq!(
        (own.topic.as_str(), &own.payload[..]),
        ("c/cid-1/m", &b"mine"[..])
    );
    let seen: Vec<_> = admin
        .publishes_within(QUIET)
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    assert_eq!(
        seen,
        ["c/cid-1/m"],
        "c/%c/# lets cid-1 write only its own tree"
    );
}
