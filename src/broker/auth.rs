//! Who may connect to the embedded broker: the users of `broker.users`
//! (password from an environment variable or a file), the users of
//! `broker.password_file` (mosquitto format, [`super::passwd`]) and
//! anonymous clients (`broker.allow_anonymous`); plus the config-load checks
//! of `password_file` and `broker.acl`.
//!
//! Owns the CONNECT credential decision ([`Auth::login`]), also offered to
//! the status page as the ports leaf's [`PasswordCheck`]. Must not know
//! about sockets, packets or topics (topic rights are [`super::acl`]), and
//! must never log or put into an error a password or a hash: `users`
//! passwords are kept only as SHA-512 digests, compared in constant time.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::acl::check_filter;
use super::config::BrokerConfig;
use super::login_guard::LoginGuard;
use super::passwd::{self, PasswdError, PasswdFile};
use crate::config::{LoginUser, Report};
use crate::ports::PasswordCheck;

/// The outcome of a CONNECT's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// `user` is `None` for an anonymous client.
    Accepted { user: Option<Arc<str>> },
    /// CONNACK 4: unknown user, wrong or missing password.
    BadCredentials,
    /// CONNACK 5: no user name and anonymous clients are not allowed.
    NotAuthorized,
    /// CONNACK 5: this address failed too often (`broker.login_failures`);
    /// the password was not checked.
    Throttled,
}

/// Why the broker's users cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("broker user {username}: {reason}")]
    User { username: String, reason: String },
    #[error(transparent)]
    PasswordFile(#[from] PasswdError),
}

/// The resolved credentials.
pub struct Auth {
    /// `broker.users`: SHA-512 of each password.
    users: HashMap<Arc<str>, [u8; 64]>,
    passwd: PasswdFile,
    allow_anonymous: bool,
    guard: LoginGuard,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .field("password_file_users", &self.passwd.len())
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

fn digest(password: &[u8]) -> [u8; 64] {
    Sha512::digest(password).into()
}

impl Auth {
    /// Resolves every user's secret and reads `password_file`.
    pub fn new(cfg: &BrokerConfig) -> Result<Auth, AuthError> {
        let mut users = HashMap::new();
        for u in &cfg.users {
            let secret =
                u.source()
                    .and_then(|s| s.resolve())
                    .map_err(|reason| AuthError::User {
                        username: u.username.clone(),
                        reason,
                    })?;
            users.insert(
                Arc::<str>::from(u.username.as_str()),
                digest(secret.expose().as_bytes()),
            );
        }
        let passwd = match &cfg.password_file {
            Some(path) => passwd::load(path)?,
            None => PasswdFile::default(),
        };
        let allow_anonymous = cfg
            .allow_anonymous
            .unwrap_or(cfg.users.is_empty() && cfg.password_file.is_none());
        let guard = LoginGuard::new(cfg.login_failures.max, cfg.login_failures.per.get());
        Ok(Auth {
            users,
            passwd,
            allow_anonymous,
            guard,
        })
    }

    /// CONNECT's user name and password. No user name: Accepted{user: None}
    /// when anonymous is allowed, else NotAuthorized (CONNACK 5).
    /// A user name with a wrong or missing password, or an unknown user:
    /// BadCredentials (CONNACK 4). Users from `users` and from the password
    /// file both count; `users` wins when a name is in both.
    ///
    /// With no users at all (no `users`, no password file) a user name and
    /// password are ignored: the client is anonymous, as with mosquitto's
    /// `allow_anonymous true` and no password file. A user name unknown to
    /// both costs the same time as a known one.
    pub fn login(&self, username: Option<&str>, password: Option<&[u8]>) -> Login {
        if self.users.is_empty() && self.passwd.len() == 0 && self.allow_anonymous {
            return Login::Accepted { user: None };
        }
        let Some(name) = username else {
            return if self.allow_anonymous {
                Login::Accepted { user: None }
            } else {
                Login::NotAuthorized
            };
        };
        let accepted = |user: &Arc<str>| Login::Accepted {
            user: Some(user.clone()),
        };
        if let Some((user, stored)) = self.users.get_key_value(name) {
            return match password {
                Some(p) if bool::from(digest(p).ct_eq(stored)) => accepted(user),
                _ => Login::BadCredentials,
            };
        }
        match (self.passwd.get(name), password) {
            (Some((user, entry)), Some(p)) if entry.verify(p) => accepted(user),
            (None, p) => {
                self.passwd.verify_unknown(p.unwrap_or_default());
                Login::BadCredentials
            }
            _ => Login::BadCredentials,
        }
    }

    /// [`Auth::login`] from `peer`, refused at once while that address is
    /// past `broker.login_failures`; failures counted, a success clears
    /// the count. Hashes passwords: call it off the runtime's threads.
    pub fn login_from(
        &self,
        peer: IpAddr,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Login {
        let now = Instant::now();
        if self.guard.blocked(peer, now) {
            return Login::Throttled;
        }
        let outcome = self.login(username, password);
        match &outcome {
            Login::Accepted { user: Some(_) } => self.guard.succeeded(peer),
            Login::BadCredentials | Login::NotAuthorized => self.guard.failed(peer, now),
            Login::Accepted { user: None } | Login::Throttled => {}
        }
        outcome
    }

    #[cfg(test)]
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
    }

    /// The store for a `users:` list alone (`http.users`): no password
    /// file, no anonymous login.
    pub fn of_users(users: &[LoginUser]) -> Result<Auth, AuthError> {
        Auth::new(&BrokerConfig {
            users: users.to_vec(),
            ..BrokerConfig::default()
        })
    }
}

/// The status page's check: a login the broker would accept under that
/// user name.
impl PasswordCheck for Auth {
    fn check(&self, user: &str, password: &[u8]) -> bool {
        matches!(
            self.login(Some(user), Some(password)),
            Login::Accepted { user: Some(_) }
        )
    }

    fn check_from(&self, peer: IpAddr, user: &str, password: &[u8]) -> bool {
        matches!(
            self.login_from(peer, Some(user), Some(password)),
            Login::Accepted { user: Some(_) }
        )
    }
}

/// Config-load checks: `password_file` readable and parsable, `acl` rules
/// with a user and well-formed topic filters.
pub(crate) fn validate(cfg: &BrokerConfig, path: &str, report: &mut Report) {
    if let Some(file) = &cfg.password_file
        && let Err(e) = passwd::load(file)
    {
        report.add(format!("{path}.password_file"), e.to_string());
    }
    for (i, rule) in cfg.acl.iter().flatten().enumerate() {
        let rp = format!("{path}.acl[{i}]");
        if rule.user.is_empty() {
            report.add(format!("{rp}.user"), "must not be empty");
        }
        for (key, list) in [
            ("read", &rule.read),
            ("write", &rule.write),
            ("readwrite", &rule.readwrite),
            ("deny", &rule.deny),
        ] {
            for (j, filter) in list.iter().enumerate() {
                if let Err(reason) = check_filter(filter) {
                    report.add(format!("{rp}.{key}[{j}]"), reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        cfg.login_failures = crate::broker::config::LoginFailures {
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
}
