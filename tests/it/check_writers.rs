//! `fieldgate check` says who may write to the plant (anonymous clients,
//! logged-in users, the ACL rules that allow `{gateway}/+/+/set`, the
//! uplink's commands) and warns when anyone may, or when an `mqtt://`
//! uplink carries a password in clear.

use crate::secret_files::fieldgate_env;
use crate::support::ConfigDir;

const HEAD: &str = "gateway:\n  id: gw\n";
const PLC: &str = "devices:\n  - name: plc\n    kind: modbus-tcp\n    address: \"127.0.0.1:502\"\n    points:\n      - { name: sp, table: holding, address: 0, writable: true }\n      - { name: t, table: input, address: 1 }\n";

/// `fieldgate check` on `HEAD` + `broker` + the PLC + `rest`, with the
/// users' passwords in the environment: the plan, after asserting exit 0.
fn plan(broker: &str, rest: &str) -> String {
    let cfg = ConfigDir::new(&format!("{HEAD}{broker}{PLC}{rest}"));
    let (code, text) = fieldgate_env(
        &["check", "-c", cfg.path_str()],
        &[("FG_W_HMI", "a"), ("FG_W_OP", "b"), ("FG_W_UP", "c")],
    );
    assert_eq!(code, 0, "{text}");
    text
}

/// The lines of `text` that start with `warning:`.
fn warnings(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("warning:")).collect()
}

const USERS: &str = "broker:\n  users:\n    - { username: hmi, password_env: FG_W_HMI }\n    - { username: op, password_env: FG_W_OP }\n";

#[test]
fn anonymous_writers_are_named_and_warned_about() {
    let text = plan(
        "broker:\n  listen: 0.0.0.0:1883\n  allow_anonymous: true\n",
        "",
    );
    assert!(
        text.contains("writes  1 writable point(s), commands on gw/+/+/set; who may write:"),
        "{text}"
    );
    assert!(
        text.contains("        anyone who reaches the broker (mqtt://0.0.0.0:1883, from the network): anonymous clients are allowed and no acl restricts writes"),
        "{text}"
    );
    let w = warnings(&text);
    assert_eq!(w.len(), 1, "{text}");
    assert!(
        w[0].starts_with("warning: anyone who reaches the broker (mqtt://0.0.0.0:1883, from the network) may write to the plant"),
        "{text}"
    );
    // the default: loopback, no users
    let text = plan("", "");
    assert!(
        warnings(&text)
            .iter()
            .any(|w| w.contains("(mqtt://127.0.0.1:1883, this machine only) may write")),
        "{text}"
    );
}

#[test]
fn with_users_every_logged_in_user_may_write_and_nothing_is_warned() {
    let text = plan(USERS, "");
    assert!(
        text.contains("        every logged-in user (users hmi, op): no acl restricts writes"),
        "{text}"
    );
    assert_eq!(warnings(&text), Vec::<&str>::new(), "{text}");
}

#[test]
fn the_acl_rules_that_allow_writing_are_listed() {
    let acl = format!(
        "{USERS}  acl:\n    - {{ user: op, read: [\"gw/#\"] }}\n    - {{ user: hmi, read: [\"gw/#\"], write: [\"gw/+/+/set\", \"other/#\"] }}\n    - {{ user: \"*\", readwrite: [\"clients/%c/#\"] }}\n"
    );
    let text = plan(&acl, "");
    assert!(
        text.contains("        user hmi (broker.acl[1]): write gw/+/+/set\n"),
        "{text}"
    );
    assert!(!text.contains("user op"), "op may not write:\n{text}");
    assert!(
        !text.contains("broker.acl[2]"),
        "clients/%c/# is not a set topic:\n{text}"
    );
    assert_eq!(warnings(&text), Vec::<&str>::new(), "{text}");

    // `*` may write: warned; a deny rule that covers the set topics takes a writer away
    let acl = format!(
        "{USERS}  acl:\n    - {{ user: \"*\", write: [\"gw/#\"] }}\n    - {{ user: op, write: [\"gw/+/+/set\"] }}\n    - {{ user: op, deny: [\"gw/+/+/set\"] }}\n"
    );
    let text = plan(&acl, "");
    assert!(
        text.contains("        every logged-in user (users hmi, op) (broker.acl[0]): write gw/#\n"),
        "{text}"
    );
    assert!(
        !text.contains("broker.acl[1]"),
        "op's writes are denied:\n{text}"
    );
    let w = warnings(&text);
    assert_eq!(w.len(), 1, "{text}");
    assert!(
        w[0].contains("broker.acl[0] lets every logged-in user (users hmi, op) write gw/#"),
        "{text}"
    );

    // no rule allows it: nobody through the broker, but the uplink's commands
    let acl = format!("{USERS}  acl:\n    - {{ user: hmi, read: [\"gw/#\"] }}\n");
    let uplink = "uplink:\n  url: mqtts://up.example:8883\n  forward: [{ filter: \"gw/#\" }]\n  commands: [{ filter: \"site/gw/+/+/set\", strip_prefix: \"site/\" }]\n";
    let text = plan(&acl, uplink);
    assert!(
        text.contains("        no client of the broker: no acl rule allows writing gw/+/+/set"),
        "{text}"
    );
    assert!(
        text.contains("        upstream: whoever the broker at mqtts://up.example:8883 lets publish to site/gw/+/+/set (uplink.commands)"),
        "{text}"
    );
}

#[test]
fn a_password_over_plain_mqtt_is_warned_about() {
    let uplink = |url: &str| {
        format!(
            "uplink:\n  url: {url}\n  username: gw\n  password_env: FG_W_UP\n  forward: [{{ filter: \"gw/#\" }}]\n"
        )
    };
    let text = plan(USERS, &uplink("mqtt://up.example:1883"));
    assert_eq!(
        warnings(&text),
        vec![
            "warning: the uplink mqtt://up.example:1883 is plain MQTT: its password crosses the network in clear; use mqtts:// (uplink.url)"
        ],
        "{text}"
    );
    let text = plan(USERS, &uplink("mqtts://up.example:8883"));
    assert_eq!(warnings(&text), Vec::<&str>::new(), "{text}");
}
