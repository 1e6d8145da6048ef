//! Unit tests of [`super`] (CONNECT credentials and the `broker:` auth/ACL
//! config checks). Owns no production code; must not touch the broker's
//! state.

use std::path::{Path, PathBuf};

use super::*;
use crate::broker::config::AclRule;
use crate::config::Locations;
use crate::config::LoginUser;

/// `mosquitto_passwd` output: alice / s3cret ($7$), bob / hunter2 ($6$).
const PASSWD: &str = "# test users\n\
alice:$7$101$JlOS2IxZr83Rw467$HXSOGkw6bGx+IcYmOGlexxGoDLNkNhK0cNYJlQqT9Bx5ob0/Bo19ZdyBiSqTDEJpjOkj8lXo29iwLpoVacsNbw==\n\
bob:$6$Vpu5kzgMsu5hUyyF$uoT1n5s6MiOgKkqHW1W5CDTHT5v083TiP8fCvfAQP2RwYAaiUpWxAkUkQ3t++x2AV9DCwgj9Z/ROyFElmoh5EA==\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn user(name: &str, password_file: PathBuf) -> LoginUser {
    LoginUser {
        username: name.to_string(),
        password_env: None,
        password_file: Some(password_file),
    }
}

fn accepted(name: &str) -> Login {
    Login::Accepted {
        user: Some(Arc::from(name)),
    }
}

/// `users`: carol (secret file with a trailing newline) and alice, who is
/// also in the password file with another password.
fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        users: vec![
            user("carol", write(dir, "carol", "c-pass\n")),
            user("alice", write(dir, "alice", "from-users")),
        ],
        password_file: Some(write(dir, "passwd", PASSWD)),
        ..BrokerConfig::default()
    }
}

#[test]
fn users_and_password_file_both_count() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::new(&config(dir.path())).unwrap();
    assert_eq!(
        auth.login(Some("carol"), Some(b"c-pass")),
        accepted("carol")
    );
    assert_eq!(auth.login(Some("bob"), Some(b"hunter2")), accepted("bob"));
    // `users` wins over the password file
    assert_eq!(
        auth.login(Some("alice"), Some(b"from-users")),
        accepted("alice")
    );
    assert_eq!(
        auth.login(Some("alice"), Some(b"s3cret")),
        Login::BadCredentials
    );
}

#[test]
fn bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::new(&config(dir.path())).unwrap();
    for (u, p) in [
        ("carol", Some(&b"c-pass\n"[..])),
        ("carol", Some(b"")),
        ("carol", None),
        ("bob", Some(b"hunter")),
        ("bob", None),
        ("mallory", Some(b"c-pass")),
        ("mallory", None),
        ("", Some(b"c-pass")),
    ] {
        assert_eq!(auth.login(Some(u), p), Login::BadCredentials, "{u:?} {p:?}");
    }
}

#[test]
fn anonymous_defaults_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    // users configured: anonymous off by default
    let auth = Auth::new(&config(dir.path())).unwrap();
    assert!(!auth.anonymous_allowed());
    assert_eq!(auth.login(None, None), Login::NotAuthorized);
    assert_eq!(auth.login(None, Some(b"x")), Login::NotAuthorized);
    // nothing configured: anonymous on
    let open = Auth::new(&BrokerConfig::default()).unwrap();
    assert!(open.anonymous_allowed());
    assert_eq!(open.login(None, None), Login::Accepted { user: None });
    // with no users at all, credentials are ignored, as mosquitto does
    assert_eq!(
        open.login(Some("x"), Some(b"y")),
        Login::Accepted { user: None }
    );
    // only a password file: off
    let only_file = BrokerConfig {
        password_file: Some(write(dir.path(), "pw2", PASSWD)),
        ..BrokerConfig::default()
    };
    assert!(!Auth::new(&only_file).unwrap().anonymous_allowed());
    // explicit settings win
    let mut cfg = config(dir.path());
    cfg.allow_anonymous = Some(true);
    let auth = Auth::new(&cfg).unwrap();
    assert_eq!(auth.login(None, None), Login::Accepted { user: None });
    assert_eq!(auth.login(Some("bob"), Some(b"hunter2")), accepted("bob"));
    let closed = BrokerConfig {
        allow_anonymous: Some(false),
        ..BrokerConfig::default()
    };
    assert_eq!(
        Auth::new(&closed).unwrap().login(None, None),
        Login::NotAuthorized
    );
}

#[test]
fn new_reports_unresolvable_secrets_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.users.push(user("dave", dir.path().join("missing")));
    let e = Auth::new(&cfg).unwrap_err();
    assert!(matches!(&e, AuthError::User { username, .. } if username == "dave"));
    let mut cfg = config(dir.path());
    cfg.users.push(LoginUser {
        username: "erin".into(),
        password_env: None,
        password_file: None,
    });
    let e = Auth::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("erin") && e.contains("password_env"), "{e}");
    let cfg = BrokerConfig {
        password_file: Some(write(dir.path(), "bad", "a:b\n")),
        ..BrokerConfig::default()
    };
    let e = Auth::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn debug_hides_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let d = format!("{:?}", Auth::new(&config(dir.path())).unwrap());
    assert!(!d.contains("c-pass") && !d.contains("carol"), "{d}");
    assert!(d.contains("users: 2"), "{d}");
}

fn problems(cfg: &BrokerConfig) -> Vec<(String, String)> {
    let locations = Locations::default();
    let mut report = Report::new(&locations);
    validate(cfg, "broker", &mut report);
    match report.finish(Path::new("fieldgate.yaml")) {
        Ok(()) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect(),
    }
}

#[test]
fn validate_password_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(problems(&config(dir.path())).is_empty());
    let mut cfg = BrokerConfig {
        password_file: Some(dir.path().join("nope")),
        ..BrokerConfig::default()
    };
    let p = problems(&cfg);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, "broker.password_file");
    assert!(p[0].1.contains("cannot read"), "{}", p[0].1);
    cfg.password_file = Some(write(dir.path(), "bad", "# c\nu:$7$x$y$z\n"));
    let p = problems(&cfg);
    assert_eq!(p[0].0, "broker.password_file");
    assert!(p[0].1.contains("line 2"), "{}", p[0].1);
}

#[test]
fn validate_acl() {
    let ok = AclRule {
        user: "*".into(),
        read: vec!["a/#".into()],
        write: vec!["%u/%c/+".into()],
        readwrite: vec!["#".into()],
        deny: vec!["secret/#".into()],
    };
    let bad = AclRule {
        user: String::new(),
        read: vec!["a".into(), "a/#/b".into()],
        write: vec!["x+".into()],
        readwrite: vec![String::new()],
        deny: vec!["ok".into(), "n\0ul".into()],
    };
    let cfg = BrokerConfig {
        acl: Some(vec![ok.clone()]),
        ..BrokerConfig::default()
    };
    assert!(problems(&cfg).is_empty());
    let cfg = BrokerConfig {
        acl: Some(vec![ok, bad]),
        ..BrokerConfig::default()
    };
    let paths: Vec<String> = problems(&cfg).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "broker.acl[1].user",
            "broker.acl[1].read[1]",
            "broker.acl[1].write[0]",
            "broker.acl[1].readwrite[0]",
            "broker.acl[1].deny[1]",
        ]
    );
}

#[test]
fn an_address_that_fails_too_often_is_refused_even_with_the_right_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.login_failures = crate::broker::LoginFailures {
        max: 3,
        per: crate::config::TimeSpan(std::time::Duration::from_secs(60)),
    };
    let auth = Auth::new(&cfg).unwrap();
    let attacker: std::net::IpAddr = [10, 0, 0, 9].into();
    let other: std::net::IpAddr = [10, 0, 0, 10].into();
    for _ in 0..3 {
        assert_eq!(
            auth.login_from(attacker, Some("carol"), Some(b"guess")),
            Login::BadCredentials
        );
    }
    assert_eq!(
        auth.login_from(attacker, Some("carol"), Some(b"c-pass")),
        Login::Throttled
    );
    assert!(matches!(
        auth.login_from(other, Some("carol"), Some(b"c-pass")),
        Login::Accepted { user: Some(_) }
    ));
}
