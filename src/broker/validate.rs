//! The load-time checks of `broker:`: limits, users, TLS files (a usable
//! certificate and key), and through `auth.rs` the password file and the ACL.
//!
//! Owns the order the problems are reported in. Must not start anything.

use super::config::BrokerConfig;
use crate::config::Report;

impl BrokerConfig {
    pub(crate) fn validate(&self, path: &str, report: &mut Report) {
        if self.max_connections == 0 {
            report.add(format!("{path}.max_connections"), "must be at least 1");
        }
        if self.max_queued_messages == 0 {
            report.add(format!("{path}.max_queued_messages"), "must be at least 1");
        }
        if self.max_inflight == 0 {
            report.add(format!("{path}.max_inflight"), "must be at least 1");
        }
        super::auth::validate(self, path, report);
        if self.max_payload.bytes() < 128 || self.max_payload.bytes() > 256 * 1024 * 1024 {
            report.add(
                format!("{path}.max_payload"),
                "must be between 128B and 256MiB",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let up = format!("{path}.users[{i}]");
            if u.username.is_empty() {
                report.add(format!("{up}.username"), "must not be empty");
            }
            if !seen.insert(u.username.as_str()) {
                report.add(
                    format!("{up}.username"),
                    format!("duplicate user {:?}", u.username),
                );
            }
            match u.source().and_then(|s| s.resolve()) {
                Ok(_) => {}
                Err(e) => report.add(up, e),
            }
        }
        if let Some(tls) = &self.tls {
            let mut missing = false;
            for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if !file.is_file() {
                    missing = true;
                    report.add(
                        format!("{path}.tls.{key}"),
                        format!("no such file: {}", file.display()),
                    );
                }
            }
            // the files exist: they must hold a usable certificate and key
            if !missing && let Err(e) = super::tls::acceptor(tls) {
                report.add(format!("{path}.tls"), e.to_string());
            }
        }
    }
}
