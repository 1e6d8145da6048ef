//! Mosquitto password files (`broker.password_file`): parses the lines
//! `mosquitto_passwd` 2.x writes and verifies a password against them.
//!
//! Owns the file format and the hash checks only: `$7$iterations$salt$hash`
//! (PBKDF2-HMAC-SHA512) and the legacy `$6$salt$hash` (SHA-512 of the
//! password followed by the salt), salt and hash in standard base64. Must
//! not decide who may log in (that is [`super::auth`]) and must never put a
//! hash, a salt or a password into an error, a log line or debug output.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// SHA-512 output: the only hash length mosquitto writes.
const HASH_LEN: usize = 64;

/// Standard alphabet; padding optional (mosquitto writes it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a password file cannot be used. Messages name the file and the line,
/// never the line's content.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("cannot read password file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("password file {} line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One user's stored hash.
pub(crate) enum Entry {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    /// `$6$`: SHA-512(password || salt).
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_LEN] },
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Pbkdf2 { iterations, .. } => write!(f, "Entry($7$, {iterations} iterations)"),
            Entry::Sha512 { .. } => f.write_str("Entry($6$)"),
        }
    }
}

impl Entry {
    /// `true` when `password` hashes to the stored hash (compared in
    /// constant time).
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0u8; HASH_LEN];
        let stored = match self {
            Entry::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                hash
            }
            Entry::Sha512 { salt, hash } => {
                let mut d = Sha512::new();
                d.update(password);
                d.update(salt);
                computed.copy_from_slice(&d.finalize());
                hash
            }
        };
        computed.ct_eq(stored).into()
    }
}

/// A parsed password file: user name to stored hash.
#[derive(Debug, Default)]
pub(crate) struct PasswdFile {
    entries: HashMap<Arc<str>, Entry>,
    /// The most PBKDF2 iterations of any entry (0: none): what a login of
    /// an unknown user costs too, so timing does not tell names apart.
    decoy_iterations: u32,
}

impl PasswdFile {
    /// The user's entry and the user name as stored (shared, for sessions).
    pub(crate) fn get(&self, user: &str) -> Option<(&Arc<str>, &Entry)> {
        self.entries.get_key_value(user)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Spends what checking a password of a listed user costs; always
    /// `false`. For logins under a name the file does not have.
    pub(crate) fn verify_unknown(&self, password: &[u8]) -> bool {
        let decoy = match self.decoy_iterations {
            0 => Entry::Sha512 {
                salt: b"fieldgate-decoy".to_vec(),
                hash: [0; HASH_LEN],
            },
            iterations => Entry::Pbkdf2 {
                iterations,
                salt: b"fieldgate-decoy".to_vec(),
                hash: [0; HASH_LEN],
            },
        };
        let _ = decoy.verify(password);
        false
    }
}

/// Reads and parses the password file at `path`.
pub(crate) fn load(path: &Path) -> Result<PasswdFile, PasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswdError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses password file text; `path` names the file in errors. Blank lines
/// and lines starting with `#` are ignored; a user listed twice is an error.
pub(crate) fn parse(text: &str, path: &Path) -> Result<PasswdFile, PasswdError> {
    let mut entries = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| PasswdError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let Some((user, hash)) = line.split_once(':') else {
            return Err(err("expected `user:hash`".into()));
        };
        if user.is_empty() {
            return Err(err("empty user name".into()));
        }
        let entry = parse_hash(hash).map_err(|reason| err(format!("user {user:?}: {reason}")))?;
        if entries.insert(Arc::<str>::from(user), entry).is_some() {
            return Err(err(format!("user {user:?} is listed twice")));
        }
    }
    let decoy_iterations = entries
        .values()
        .filter_map(|e| match e {
            Entry::Pbkdf2 { iterations, .. } => Some(*iterations),
            Entry::Sha512 { .. } => None,
        })
        .max()
        .unwrap_or(0);
    Ok(PasswdFile {
        entries,
        decoy_iterations,
    })
}

/// Parses `$7$iterations$salt$hash` or `$6$salt$hash`. Reasons never quote
/// the hash.
fn parse_hash(s: &str) -> Result<Entry, String> {
    let parts: Vec<&str> = s.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or("$7$ iteration count must be a positive integer")?;
            Ok(Entry::Pbkdf2 {
                iterations,
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            })
        }
        ["", "6", salt, hash] => Ok(Entry::Sha512 {
            salt: decode_salt(salt)?,
            hash: decode_hash(hash)?,
        }),
        ["", "7", ..] => Err("expected $7$iterations$salt$hash".into()),
        ["", "6", ..] => Err("expected $6$salt$hash".into()),
        _ => Err("unsupported hash (expected $7$ or $6$, as written by mosquitto_passwd)".into()),
    }
}

fn decode_salt(s: &str) -> Result<Vec<u8>, String> {
    match B64.decode(s) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        Ok(_) => Err("empty salt".into()),
        Err(_) => Err("salt is not valid base64".into()),
    }
}

fn decode_hash(s: &str) -> Result<[u8; HASH_LEN], String> {
    let bytes = B64
        .decode(s)
        .map_err(|_| "hash is not valid base64".to_string())?;
    <[u8; HASH_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("hash must be {HASH_LEN} bytes (SHA-512)"))
}

#[cfg(test)]
mod tests {
    //! Unit tests of [`super`] (mosquitto password files). Owns no production
    //! code; must not touch the broker's state.

    use super::*;

    /// Written by `mosquitto_passwd -b -c FILE alice s3cret` (mosquitto 2.0).
    const ALICE_7: &str = "alice:$7$101$JlOS2IxZr83Rw467$HXSOGkw6bGx+IcYmOGlexxGoDLNkNhK0cNYJlQqT9Bx5ob0/Bo19ZdyBiSqTDEJpjOkj8lXo29iwLpoVacsNbw==";
    /// Written by `mosquitto_passwd -H sha512 -b -c FILE bob hunter2`.
    const BOB_6: &str = "bob:$6$Vpu5kzgMsu5hUyyF$uoT1n5s6MiOgKkqHW1W5CDTHT5v083TiP8fCvfAQP2RwYAaiUpWxAkUkQ3t++x2AV9DCwgj9Z/ROyFElmoh5EA==";

    fn file(text: &str) -> PasswdFile {
        match parse(text, Path::new("pw")) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn verify(f: &PasswdFile, user: &str, password: &[u8]) -> bool {
        f.get(user).is_some_and(|(_, e)| e.verify(password))
    }

    fn line_error(text: &str) -> (usize, String) {
        match parse(text, Path::new("/etc/pw")) {
            Err(PasswdError::Line { line, reason, path }) => {
                assert_eq!(path, Path::new("/etc/pw"));
                (line, reason)
            }
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn verifies_pbkdf2_and_sha512_vectors() {
        let f = file(&format!("# users\n\n{ALICE_7}\n{BOB_6}\r\n"));
        assert_eq!(f.len(), 2);
        assert!(verify(&f, "alice", b"s3cret"));
        assert!(!verify(&f, "alice", b"s3cre"));
        assert!(!verify(&f, "alice", b"s3cret "));
        assert!(!verify(&f, "alice", b""));
        assert!(verify(&f, "bob", b"hunter2"));
        assert!(!verify(&f, "bob", b"hunter3"));
        assert!(!verify(&f, "carol", b"s3cret"));
        let (name, _) = f.get("alice").unwrap();
        assert_eq!(&**name, "alice");
    }

    #[test]
    fn verifies_what_the_real_mosquitto_passwd_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = Vec::new();
        for (hash, user, pass) in [
            ("sha512-pbkdf2", "dave", "pa:ss wörd"),
            ("sha512", "erin", "x"),
        ] {
            let path = dir.path().join(user);
            let run = std::process::Command::new("mosquitto_passwd")
                .args(["-H", hash, "-b", "-c"])
                .arg(&path)
                .args([user, pass])
                .output();
            match run {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!("mosquitto_passwd failed: {o:?}"),
                Err(_) => {
                    eprintln!("mosquitto_passwd not installed: real-tool test skipped");
                    return;
                }
            }
            users.push((path, user, pass));
        }
        for (path, user, pass) in users {
            let f = load(&path).unwrap();
            assert!(verify(&f, user, pass.as_bytes()), "{user}");
            assert!(!verify(&f, user, b"wrong"), "{user}");
        }
    }

    #[test]
    fn errors_name_file_and_line_without_the_hash() {
        let secret_hash = "$7$101$JlOS2IxZr83Rw467$HXSOGkw6";
        let (line, reason) = line_error(&format!("{ALICE_7}\n# c\nmallory:{secret_hash}\n"));
        assert_eq!(line, 3);
        assert!(reason.contains("mallory"), "{reason}");
        assert!(reason.contains("64 bytes"), "{reason}");
        assert!(!reason.contains("JlOS2"), "{reason}");
        let e = parse(&format!("x:{secret_hash}"), Path::new("/etc/pw"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("password file /etc/pw line 1: "), "{e}");
        assert!(!e.contains("JlOS2"), "{e}");
    }

    #[test]
    fn rejects_malformed_lines() {
        let hash7 = ALICE_7.trim_start_matches("alice:");
        let cases = [
            ("no-colon".to_string(), "user:hash"),
            (format!(":{hash7}"), "empty user name"),
            ("u:plaintext".to_string(), "unsupported hash"),
            ("u:$5$abc$def".to_string(), "unsupported hash"),
            ("u:$7$101$abc".to_string(), "$7$iterations"),
            ("u:$6$abc".to_string(), "$6$salt$hash"),
            (
                hash7.replacen("$101$", "$0$", 1).replace("$7$", "u:$7$"),
                "iteration",
            ),
            (
                hash7.replacen("$101$", "$x$", 1).replace("$7$", "u:$7$"),
                "iteration",
            ),
            ("u:$6$$AAAA".to_string(), "empty salt"),
            ("u:$6$!!$AAAA".to_string(), "salt is not valid base64"),
            ("u:$6$AAAA$!!".to_string(), "hash is not valid base64"),
            (format!("{ALICE_7}\n{ALICE_7}"), "listed twice"),
        ];
        for (text, want) in cases {
            let (_, reason) = line_error(&text);
            assert!(reason.contains(want), "{text:?}: {reason}");
        }
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = load(Path::new("/nonexistent/fieldgate/pw")).unwrap_err();
        assert!(matches!(e, PasswdError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/fieldgate/pw"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let f = file(ALICE_7);
        let d = format!("{f:?}");
        assert!(d.contains("101 iterations"), "{d}");
        assert!(!d.contains("JlOS2") && !d.contains("HXSOG"), "{d}");
    }
}
