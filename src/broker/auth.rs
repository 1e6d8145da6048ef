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
#[path = "auth_tests.rs"]
mod tests;
