//! Authentication: `broker.users` (passwords from env or file), a
//! mosquitto password file (`broker.password_file`), `allow_anonymous`,
//! and the CONNACK codes of refused logins.

use rumqttc::{Packet, QoS};

use super::connect::refused_with;
use super::raw::{self, ConnectOutcome};
use super::{Client, SECS, local_args, mosquitto, opts, yaml};
use crate::support::{Gateway, Sub};

const USERS: &str = r#"
users: [{ username: hmi, password_env: FG_TEST_HMI_PW }, { username: script, password_file: "PWFILE" }]
"#;

fn auth_gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("script.pw");
    crate::support::write_secret(&pw, "file-secret\n");
    let cfg = yaml(&USERS.replace("PWFILE", pw.to_str().expect("utf-8 path")));
    let gw = Gateway::start_with_env(&cfg, &[("FG_TEST_HMI_PW", "env-secret")]);
    (gw, dir)
}

/// §3.1.3.4-5: user name and password from `password_env` and `password_file`.
#[tokio::test]
async fn users_log_in_with_passwords_from_env_and_file() {
    let (gw, _dir) = auth_gateway();
    let mut o = opts("l-hmi", gw.port);
    o.set_credentials("hmi", "env-secret");
    let mut hmi = Client::connect(o).await;
    hmi.client
        .subscribe("l/auth", QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    hmi.wait_incoming(SECS, |p| matches!(p, Packet::SubAck(_)))
        .await;
    let port = gw.port.to_string();
    let (ok, _, err) = mosquitto(
        "mosquitto_pub",
        &local_args(
            &port,
            &[
                "-u",
                "script",
                "-P",
                "file-secret",
                "-q",
                "1",
                "-t",
                "l/auth",
                "-m",
                "from-script",
            ],
        ),
    )
    .await;
    assert!(ok, "mosquitto_pub with the file password failed: {err}");
    hmi.wait_incoming(
        SECS,
        |p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"from-script"),
    )
    .await;
    assert!(
        !gw.log_text().contains("env-secret") && !gw.log_text().contains("file-secret"),
        "a password appeared in the log"
    );
}

/// MQTT-3.2.2-4/-5 with §3.2.2.3 codes 4 and 5: a refused CONNECT gets its
/// CONNACK, then the connection closes.
#[tokio::test]
async fn wrong_password_and_anonymous_clients_are_refused() {
    let (gw, _dir) = auth_gateway();
    // §3.2.2.3: 4 = bad user name or password, 5 = not authorised
    for (id, login, code) in [
        ("l-wrong", Some(("hmi", "nope")), 4),
        ("l-unknown", Some(("mallory", "env-secret")), 4),
        ("l-anon", None, 5),
    ] {
        let c = raw::connect(id, true, 30, login, None);
        refused_with(gw.port, &c, code, id).await;
    }
    let port = gw.port.to_string();
    let (ok, _, _) = mosquitto(
        "mosquitto_pub",
        &local_args(&port, &["-u", "hmi", "-P", "nope", "-t", "l/x", "-m", "x"]),
    )
    .await;
    assert!(!ok, "mosquitto_pub with a wrong password succeeded");
}

/// §3.2.2.3: a refused login is answered with CONNACK 4 or 5.
#[tokio::test]
async fn refused_login_gets_connack_code_4_or_5() {
    let (gw, _dir) = auth_gateway();
    let (_s, outcome) = raw::connect_raw(
        gw.port,
        &raw::connect("l-code", true, 30, Some(("hmi", "nope")), None),
    )
    .await;
    assert!(
        matches!(outcome, ConnectOutcome::ConnAck { code: 4 | 5, .. }),
        "{outcome:?}"
    );
}

/// `mosquitto_passwd -b -c FILE user pass` output; `None` (test skipped)
/// only when mosquitto_passwd is not installed.
fn mosquitto_passwd(dir: &std::path::Path, user: &str, pass: &str) -> Option<String> {
    let file = dir.join("passwd");
    let file = file.to_str().expect("utf-8 path").to_string();
    match std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", &file, user, pass])
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: mosquitto_passwd is not installed (.ci/run installs mosquitto)");
            None
        }
        Err(e) => panic!("run mosquitto_passwd: {e}"),
        Ok(out) => {
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            let text = std::fs::read_to_string(&file).expect("read password file");
            // mosquitto_passwd leaves the file as the umask makes it (0644)
            crate::support::write_secret(std::path::Path::new(&file), &text);
            assert!(text.starts_with(&format!("{user}:$7$")), "{text}");
            Some(file)
        }
    }
}

/// A password file made by the real `mosquitto_passwd` (`$7$` PBKDF2-SHA512):
/// its user logs in (§3.1.3.5), a wrong password gets 4, an anonymous client
/// 5 (allow_anonymous defaults to false with a password file).
#[tokio::test]
async fn mosquitto_password_file_logs_in_its_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(file) = mosquitto_passwd(dir.path(), "plc", "s3cret-pw") else {
        return;
    };
    let gw = Gateway::start(&yaml(&format!("password_file: \"{file}\"")));
    let mut o = opts("a-pwfile", gw.port);
    o.set_credentials("plc", "s3cret-pw");
    let mut sub = Sub::connect_with(o.clone(), &["a/pw"], QoS::AtLeastOnce).await;
    o.set_client_id("a-pwfile-pub".into());
    let mut c = Client::connect(o).await;
    c.publish_acked("a/pw", QoS::AtLeastOnce, false, "in").await;
    assert_eq!(sub.wait_topic("a/pw", SECS).await.text(), "in");
    let wrong = raw::connect("a-pw-wrong", true, 30, Some(("plc", "s3cret-px")), None);
    refused_with(gw.port, &wrong, 4, "wrong password").await;
    let anon = raw::connect("a-pw-anon", true, 30, None, None);
    refused_with(gw.port, &anon, 5, "anonymous").await;
}

/// `allow_anonymous: true` beside users: anonymous clients are accepted,
/// users still need their password.
#[tokio::test]
async fn allow_anonymous_true_accepts_anonymous_beside_users() {
    let gw = Gateway::start_with_env(
        &yaml("users: [{ username: hmi, password_env: FG_TEST_HMI_PW }]\nallow_anonymous: true"),
        &[("FG_TEST_HMI_PW", "env-secret")],
    );
    let (_s, outcome) =
        raw::connect_raw(gw.port, &raw::connect("a-anon-ok", true, 30, None, None)).await;
    assert!(
        matches!(outcome, ConnectOutcome::ConnAck { code: 0, .. }),
        "{outcome:?}"
    );
    let c = raw::connect("a-anon-bad", true, 30, Some(("hmi", "nope")), None);
    refused_with(gw.port, &c, 4, "wrong password with allow_anonymous").await;
}
