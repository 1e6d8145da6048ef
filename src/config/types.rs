//! Typed scalar values of the YAML file: durations (`500ms`, `5m`), byte sizes
//! (`64KiB`), names (`[A-Za-z0-9_-]+`), secrets read from the environment
//! or a file, and the entries of a `users:` list ([`LoginUser`]).
//!
//! Owns parsing and the user-facing wording of these values. Must not know
//! which section of the config uses them.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// A duration written as a string: `500ms`, `1s`, `5m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeSpan(pub std::time::Duration);

impl TimeSpan {
    pub const fn from_millis(ms: u64) -> Self {
        TimeSpan(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        TimeSpan(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TimeSpan;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 1s, 5m or 7d")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TimeSpan, E> {
                humantime::parse_duration(s.trim())
                    .map(TimeSpan)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {s:?}: {e} (write e.g. 500ms, 1s, 5m, 7d)"
                        ))
                    })
            }
        }
        d.deserialize_str(V)
    }
}

/// A size in bytes written as a string: `4KiB`, `256MiB`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// The size as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 4KiB, 256MiB or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid size {s:?}: {e} (write e.g. 64KiB, 256MiB)"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// `reconnect:` (serial ports, the uplink): how long to wait between
/// attempts, doubling from `min` to `max` (with jitter where it is used).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    pub min: TimeSpan,
    pub max: TimeSpan,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            min: TimeSpan::from_millis(500),
            max: TimeSpan::from_secs(30),
        }
    }
}

/// `true` when `s` is a valid gateway id or device/point name: `[A-Za-z0-9_-]+`.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A secret value: printed as `***` in logs and debug output.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret comes from: `*_env` names an environment variable,
/// `*_file` a file whose content (trailing newline removed) is the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Picks the one source given; `field` is the key stem (`password`) for messages.
    pub fn pick(
        env: Option<&String>,
        file: Option<&PathBuf>,
        field: &str,
    ) -> Result<Option<SecretSource>, String> {
        match (env, file) {
            (Some(_), Some(_)) => Err(format!("give either {field}_env or {field}_file, not both")),
            (Some(e), None) => Ok(Some(SecretSource::Env(e.clone()))),
            (None, Some(f)) => Ok(Some(SecretSource::File(f.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret; the error names the variable or file, never the value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(var) => std::env::var(var)
                .map(Secret)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)")),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

/// One login of a `users:` list (`broker.users`, `http.users`): a user
/// name and where the password comes from (`password_env` or
/// `password_file`, never the YAML file itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginUser {
    pub username: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl LoginUser {
    /// Where the password comes from; an error when neither or both are given.
    pub fn source(&self) -> Result<SecretSource, String> {
        SecretSource::pick(
            self.password_env.as_ref(),
            self.password_file.as_ref(),
            "password",
        )?
        .ok_or_else(|| "a user needs password_env or password_file".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        let d: TimeSpan = serde_yaml_ng::from_str("500ms").unwrap();
        assert_eq!(d.get(), std::time::Duration::from_millis(500));
        let d: TimeSpan = serde_yaml_ng::from_str("7d").unwrap();
        assert_eq!(d.get().as_secs(), 7 * 86400);
        assert!(serde_yaml_ng::from_str::<TimeSpan>("5 parsecs").is_err());
        let s: ByteSize = serde_yaml_ng::from_str("256KiB").unwrap();
        assert_eq!(s.bytes(), 256 * 1024);
        let s: ByteSize = serde_yaml_ng::from_str("1000").unwrap();
        assert_eq!(s.bytes(), 1000);
    }

    #[test]
    fn names() {
        assert!(is_valid_name("pi-gw_01"));
        assert!(!is_valid_name("pi gw"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a/b"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }
}
