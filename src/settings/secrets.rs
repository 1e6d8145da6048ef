//! The secret files the config names, across sections: every user's
//! `password_file` (`broker.users`, `http.users`), `broker.password_file`,
//! `broker.tls.key_file`, `uplink.password_file` and `uplink.key_file`.
//! Before any section reads them, each path has its `${NAME}` references
//! expanded (systemd credentials: `${CREDENTIALS_DIRECTORY}/uplink`), and a
//! file other users can read is refused (exit 78, with the `chmod` to run).
//!
//! Owns the list of those keys. The rules themselves are the config leaf's
//! (`config::secrets`). Must not read the secrets.

use std::path::PathBuf;

use super::RawConfig;
use crate::config::{Report, secrets};

/// Every secret file of the config: its YAML path and its path as written.
fn secret_files(raw: &mut RawConfig) -> Vec<(String, &mut PathBuf)> {
    let mut out = Vec::new();
    let b = &mut raw.broker;
    for (i, u) in b.users.iter_mut().enumerate() {
        if let Some(f) = &mut u.password_file {
            out.push((format!("broker.users[{i}].password_file"), f));
        }
    }
    if let Some(f) = &mut b.password_file {
        out.push(("broker.password_file".to_string(), f));
    }
    if let Some(tls) = &mut b.tls {
        out.push(("broker.tls.key_file".to_string(), &mut tls.key_file));
    }
    if let Some(u) = &mut raw.uplink {
        for (key, file) in [
            ("password_file", &mut u.password_file),
            ("key_file", &mut u.key_file),
        ] {
            if let Some(f) = file {
                out.push((format!("uplink.{key}"), f));
            }
        }
    }
    for (section, http) in [("http", &mut raw.http), ("metrics", &mut raw.metrics)] {
        for (i, u) in http.iter_mut().flat_map(|h| h.users.iter_mut()).enumerate() {
            if let Some(f) = &mut u.password_file {
                out.push((format!("{section}.users[{i}].password_file"), f));
            }
        }
    }
    out
}

/// Expands the secret files' paths in place and checks their modes;
/// problems go to `report` at the key's YAML path.
pub(super) fn prepare(raw: &mut RawConfig, report: &mut Report) {
    for (key, file) in secret_files(raw) {
        match secrets::expand_env(file) {
            Ok(expanded) => *file = expanded,
            Err(e) => {
                report.add(key, e);
                continue;
            }
        }
        if let Err(e) = secrets::check_mode(file) {
            report.add(key, e);
        }
    }
}
