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
        self.validate_limits(path, report);
        self.validate_exposure(path, report);
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
            if tls.require_certificate && tls.cafile.is_none() {
                report.add(
                    format!("{path}.tls.cafile"),
                    "require_certificate needs cafile: the CA that signs the client certificates",
                );
            }
            if let Some(ca) = &tls.cafile
                && !ca.is_file()
            {
                report.add(
                    format!("{path}.tls.cafile"),
                    format!("no such file: {}", ca.display()),
                );
            }
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

impl BrokerConfig {
    fn validate_limits(&self, path: &str, report: &mut Report) {
        for (key, value) in [
            ("max_topic_levels", self.max_topic_levels),
            (
                "max_subscriptions_per_client",
                self.max_subscriptions_per_client,
            ),
            ("max_pending_connections", self.max_pending_connections),
            ("max_sessions", self.max_sessions),
        ] {
            if value == 0 {
                report.add(format!("{path}.{key}"), "must be at least 1");
            }
        }
        if self.connect_timeout.get().is_zero() {
            report.add(format!("{path}.connect_timeout"), "must be longer than 0s");
        }
        if self.login_failures.max == 0 || self.login_failures.per.get().is_zero() {
            report.add(
                format!("{path}.login_failures"),
                "max must be at least 1 and per longer than 0s",
            );
        }
        if self.max_client_buffer.bytes() < 64 * 1024 {
            report.add(
                format!("{path}.max_client_buffer"),
                "must be at least 64KiB (a client's acknowledgements and one batch of messages)",
            );
        }
        if self.listen.is_none() && self.tls.is_none() && self.websocket.is_none() {
            report.add(
                format!("{path}.listen"),
                "null turns the plain listener off, but neither tls nor websocket is set: \
                 no client could connect",
            );
        }
    }

    /// Secure by default (like mosquitto 2.0): a listener that other hosts
    /// reach, with no users, needs `allow_anonymous: true` said explicitly.
    fn validate_exposure(&self, path: &str, report: &mut Report) {
        if self.allow_anonymous.is_some() || !self.users.is_empty() || self.password_file.is_some()
        {
            return;
        }
        let listeners = [
            ("listen", self.listen),
            ("websocket", self.websocket),
            ("tls.listen", self.tls.as_ref().map(|t| t.listen)),
        ];
        for (key, addr) in listeners {
            if let Some(addr) = addr
                && !addr.ip().is_loopback()
            {
                report.add(
                    format!("{path}.{key}"),
                    format!(
                        "{addr} is reachable from other hosts and the broker has no users: anyone \
                         on the network could publish, device writes included. Add a user \
                         (broker.users, or broker.password_file made with `mosquitto_passwd -c \
                         FILE NAME`), or set broker.allow_anonymous: true to allow this on purpose"
                    ),
                );
            }
        }
    }
}
