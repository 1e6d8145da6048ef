//! Files that hold secrets (passwords, password files, TLS private keys):
//! the `${NAME}` environment references their paths may hold (systemd's
//! `${CREDENTIALS_DIRECTORY}`, see `LoadCredential=` in the unit), and the
//! permission check that refuses a secret file other users can read.
//!
//! Owns those two rules and their wording. Must not know which section
//! names which file (the wiring lists them, `settings/secrets.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The permission bits of "other users" (neither the owner nor the group).
/// The group is allowed: the packaged setup gives the service account its
/// files through the group (`root:fieldgate`, mode 0640), which keeps the
/// secret out of the service's own hands (it cannot rewrite it).
const OTHERS: u32 = 0o007;

/// `path` with every `${NAME}` replaced by the environment variable NAME.
/// A `$` not followed by `{` stays as it is. An unset variable is an error
/// that names it.
pub fn expand_env(path: &Path) -> Result<PathBuf, String> {
    let Some(text) = path.to_str() else {
        return Ok(path.to_path_buf());
    };
    if !text.contains("${") {
        return Ok(path.to_path_buf());
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("{text:?}: unclosed `${{` (write ${{NAME}})"));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) if name == "CREDENTIALS_DIRECTORY" => {
                return Err(format!(
                    "{text:?}: ${{CREDENTIALS_DIRECTORY}} is not set: systemd sets it for the \
                     service's own commands when the unit has LoadCredential= (ExecStartPre's \
                     `fieldgate check` too); a login shell does not have it"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{text:?}: environment variable {name} is not set (or not UTF-8)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

/// Refuses a secret file that users other than its owner and group can
/// read, write or run: the message names the file, its mode and the
/// command that fixes it. A file that cannot be read at all passes here
/// (its section reports that).
pub fn check_mode(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OTHERS == 0 {
        return Ok(());
    }
    Err(format!(
        "secret file {} is open to every user on this machine (mode {mode:04o}); \
         run `chmod 600 {}` (or `chmod 640` with the service's group owning it)",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand_and_an_unset_one_is_named() {
        let path = std::env::var("PATH").expect("PATH is set");
        let p = expand_env(Path::new("${PATH}/uplink")).unwrap();
        assert_eq!(p, PathBuf::from(format!("{path}/uplink")));
        let plain = Path::new("/etc/fieldgate/$weird/x");
        assert_eq!(expand_env(plain).unwrap(), plain);
        let e = expand_env(Path::new("${FG_SECRETS_TEST_UNSET}/x")).unwrap_err();
        assert!(e.contains("FG_SECRETS_TEST_UNSET is not set"), "{e}");
        assert!(expand_env(Path::new("${OOPS/x")).is_err());
    }

    #[test]
    fn files_open_to_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "x").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o640, true),
            (0o400, true),
            (0o644, false),
            (0o602, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_mode(&f);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
                assert!(e.contains(&format!("chmod 600 {}", f.display())), "{e}");
            }
        }
        assert!(check_mode(&dir.path().join("missing")).is_ok());
    }
}
