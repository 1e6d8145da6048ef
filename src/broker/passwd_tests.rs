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
