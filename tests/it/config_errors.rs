//! Bad configs: each must exit 78 and name the YAML path and line.

use crate::support::{ConfigDir, fieldgate};

const GOOD_HEAD: &str = "gateway:\n  id: gw\n";

pub(crate) fn check(yaml: &str) -> (i32, String) {
    let cfg = ConfigDir::new(yaml);
    let out = fieldgate(&["check", "-c", cfg.path_str()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_configs_exit_78_with_path_and_line() {
    // (config, expected fragments of the message)
    let cases: &[(&str, &[&str])] = &[
        (
            "gateway:\n  id: gw\n  workers: 0\n",
            &["gateway.workers (line 3", "out of range: 1 to 64"],
        ),
        (
            "gateway:\n  id: gw\ngatway: 1\n",
            &["gatway", "line 3", "unknown field"],
        ),
        (
            "gateway:\n  id: bad id\n",
            &["gateway.id (line 2", "not a valid id"],
        ),
        (
            "gateway:\n  id: gw\ndevices:\n  - { name: a, kind: simulated }\n  - { name: a, kind: simulated }\n",
            &["devices[1].name (line 5", "duplicate device name"],
        ),
        (
            "gateway:\n  id: gw\ndevices:\n  - name: status\n    kind: simulated\n",
            &["devices[0].name (line 4", "reserved"],
        ),
        (
            "gateway:\n  id: gw\nrules:\n  topic: \"{gateway}/{nope}\"\n",
            &["rules.topic (line 4", "{nope}"],
        ),
        (
            "gateway:\n  id: gw\ndevices:\n  - name: x\n    kind: opcua\n",
            &["devices[0].kind (line 5", "kinds available: simulated"],
        ),
        (
            "gateway:\n  id: gw\ndevices:\n  - name: x\n    kind: simulated\n    poll: fast\n",
            &["devices[0].poll (line 6", "invalid duration"],
        ),
        (
            "gateway:\n  id: gw\ndevices:\n  - name: x\n    kind: simulated\n    points:\n      - name: p\n        signal: sine\n        periodd: 1s\n",
            &["devices[0].points[0].periodd (line 9", "unknown field"],
        ),
        (
            "gateway:\n  id: gw\nbroker:\n  users:\n    - { username: hmi, password_env: FIELDGATE_TEST_UNSET_VAR }\n",
            &[
                "broker.users[0] (line 5",
                "FIELDGATE_TEST_UNSET_VAR is not set",
            ],
        ),
        (
            "gateway:\n  id: gw\nbroker:\n  max_payload: lots\n",
            &["broker.max_payload (line 4", "invalid size"],
        ),
        (
            "gateway:\n  id: gw\nrules:\n  qos: 3\n",
            &["rules.qos (line 4", "0, 1 or 2"],
        ),
        (
            "gateway:\n  id: gw\nbroker:\n  max_queued_messages: 0\n",
            &["broker.max_queued_messages (line 4", "at least 1"],
        ),
        ("gateway:\n  id: [gw\n", &["line 2"]),
        ("devices: []\n", &["missing field `gateway`"]),
        (
            // the first device fails to parse: the second is still named devices[1], at its line
            "gateway:\n  id: gw\ndevices:\n  - { name: a, kind: simulated, poll: fast }\n  - { name: status, kind: simulated }\n",
            &[
                "devices[0].poll (line 4",
                "devices[1].name (line 5",
                "2 problems",
            ],
        ),
    ];
    for (yaml, wants) in cases {
        let (code, text) = check(yaml);
        assert_eq!(code, 78, "config:\n{yaml}\noutput:\n{text}");
        for w in *wants {
            assert!(
                text.contains(w),
                "expected {w:?} in the message for:\n{yaml}\ngot:\n{text}"
            );
        }
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn all_semantic_problems_are_reported_at_once() {
    let yaml = format!(
        "{GOOD_HEAD}devices:\n  - {{ name: status, kind: simulated }}\n  - {{ name: b, kind: simulated }}\n  - {{ name: b, kind: simulated }}\nrules:\n  topic: \"{{x}}\"\n"
    );
    let (code, text) = check(&yaml);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("3 problems"), "{text}");
    assert!(text.contains("devices[0].name"), "{text}");
    assert!(text.contains("devices[2].name"), "{text}");
    assert!(text.contains("rules.topic"), "{text}");
}

#[test]
fn missing_file_is_a_config_error() {
    let out = fieldgate(&["check", "-c", "/nonexistent/fieldgate.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fieldgate.yaml"));
}

#[test]
fn run_with_a_bad_config_exits_78_too() {
    let cfg = ConfigDir::new("gateway:\n  id: bad id\n");
    let out = fieldgate(&["run", "-c", cfg.path_str()]);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn check_prints_the_plan_of_the_demo() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.yaml");
    let out = fieldgate(&["check", "-c", demo]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "demo-gw/boiler/temperature",
        "demo-gw/line1/parts",
        "demo-gw/status/boiler",
        "127.0.0.1:1883",
    ] {
        assert!(text.contains(want), "plan lacks {want}:\n{text}");
    }
}
