//! The part of the plan that says who may write to the plant: who may
//! publish on `{gateway}/+/+/set` (anonymous clients, logged-in users, the
//! `broker.acl` rules that allow it, the uplink's command filters,
//! Sparkplug DCMD), and
//! the warnings when anyone may, or when a password crosses the network in
//! clear (`mqtt://` uplink).
//!
//! Owns that wording. Reads the config only; the ACL's filter algebra is
//! the broker's (`broker::acl`). Must not start anything.

use std::fmt::Write;

use crate::broker::acl::{covers, overlaps};
use crate::broker::{AclRule, BrokerConfig};
use crate::settings::Config;

/// Appends the writers' lines to `s` and their warnings to `warnings`.
pub(super) fn describe(s: &mut String, config: &Config, warnings: &mut Vec<String>) {
    let gw = &config.gateway.id;
    let set = crate::southbound::commands::filter(gw);
    let writable: usize = config.devices.iter().map(|d| d.write_limits().len()).sum();
    if writable == 0 {
        let _ = writeln!(s, "writes  none: no point is writable");
    } else {
        let _ = writeln!(
            s,
            "writes  {writable} writable point(s), commands on {set}; who may write:"
        );
        broker_writers(s, &config.broker, &set, warnings);
        if let Some(sp) = config.sparkplug.as_ref().filter(|sp| sp.enabled) {
            let _ = writeln!(
                s,
                "        Sparkplug hosts: whoever may publish to spBv1.0/{}/DCMD/{}/+ (DCMD writes take the same path)",
                sp.group_id,
                sp.node_id(gw)
            );
        }
        for c in config.uplink.iter().flat_map(|u| &u.commands) {
            let local = c.filter.strip_prefix(&c.strip_prefix).unwrap_or(&c.filter);
            if overlaps(local, &set)
                && let Some(u) = &config.uplink
            {
                let _ = writeln!(
                    s,
                    "        upstream: whoever the broker at {} lets publish to {} (uplink.commands)",
                    u.url, c.filter
                );
            }
        }
    }
    if let Some(u) = &config.uplink
        && u.url.trim().to_ascii_lowercase().starts_with("mqtt://")
        && (u.password_env.is_some() || u.password_file.is_some())
    {
        warnings.push(format!(
            "the uplink {} is plain MQTT: its password crosses the network in clear; use mqtts:// (uplink.url)",
            u.url
        ));
    }
}

/// Who may publish on the set topics through the embedded broker.
fn broker_writers(s: &mut String, b: &BrokerConfig, set: &str, warnings: &mut Vec<String>) {
    let anonymous = b
        .allow_anonymous
        .unwrap_or(b.users.is_empty() && b.password_file.is_none());
    let reach = reach(b);
    let Some(rules) = &b.acl else {
        if anonymous {
            let _ = writeln!(
                s,
                "        anyone who reaches the broker ({reach}): anonymous clients are allowed and no acl restricts writes"
            );
            warnings.push(format!(
                "anyone who reaches the broker ({reach}) may write to the plant: add `broker.users` (or \
                 `broker.password_file`) and a `broker.acl` rule that gives `write: [\"{set}\"]` to the \
                 users who may"
            ));
        } else {
            let _ = writeln!(
                s,
                "        every logged-in user ({}): no acl restricts writes",
                logins(b)
            );
        }
        return;
    };
    let mut any = false;
    for (i, r) in rules.iter().enumerate() {
        let allowed: Vec<&str> = r
            .write
            .iter()
            .chain(&r.readwrite)
            .map(String::as_str)
            .filter(|f| overlaps(&wildcard_patterns(f), set))
            .collect();
        if allowed.is_empty() {
            continue;
        }
        let denies = denies_for(rules, &r.user, set);
        if denies.iter().any(|d| covers(d, set)) {
            continue;
        }
        any = true;
        let who = match (r.user.as_str(), anonymous) {
            ("*", true) => "every client, anonymous ones too".to_string(),
            ("*", false) => format!("every logged-in user ({})", logins(b)),
            (user, _) => format!("user {user}"),
        };
        let except = if denies.is_empty() {
            String::new()
        } else {
            format!(", except {}", denies.join(", "))
        };
        let _ = writeln!(
            s,
            "        {who} (broker.acl[{i}]): write {}{except}",
            allowed.join(", ")
        );
        if r.user == "*" {
            warnings.push(format!(
                "broker.acl[{i}] lets {who} write {}: anyone who can log in to the broker ({reach}) may \
                 write to the plant; name the users who may instead of \"*\"",
                allowed.join(", ")
            ));
        }
    }
    if !any {
        let _ = writeln!(
            s,
            "        no client of the broker: no acl rule allows writing {set}"
        );
    }
}

/// The deny filters of the rules for `user` (and for `*`) that touch the
/// set topics.
fn denies_for<'a>(rules: &'a [AclRule], user: &str, set: &str) -> Vec<&'a str> {
    rules
        .iter()
        .filter(|r| r.user == "*" || r.user == user)
        .flat_map(|r| &r.deny)
        .map(String::as_str)
        // a deny with %u or %c depends on the client: it is left out, so
        // the plan errs towards showing more writers, never fewer
        .filter(|d| !d.contains('%') && overlaps(d, set))
        .collect()
}

/// An allow filter with its `%u` / `%c` levels as `+`: the topics it may
/// let some client write.
fn wildcard_patterns(filter: &str) -> String {
    filter
        .split('/')
        .map(|level| if level.contains('%') { "+" } else { level })
        .collect::<Vec<_>>()
        .join("/")
}

/// The listeners, and whether they are reachable from the network.
fn reach(b: &BrokerConfig) -> String {
    let mut addrs: Vec<String> = b.listen.iter().map(|l| format!("mqtt://{l}")).collect();
    if let Some(tls) = &b.tls {
        addrs.push(format!("mqtts://{}", tls.listen));
    }
    if let Some(ws) = b.websocket {
        addrs.push(format!("ws://{ws}"));
    }
    let loopback = b.listen.is_none_or(|l| l.ip().is_loopback())
        && b.tls.as_ref().is_none_or(|t| t.listen.ip().is_loopback())
        && b.websocket.is_none_or(|w| w.ip().is_loopback());
    let whence = if loopback {
        "this machine only"
    } else {
        "from the network"
    };
    format!("{}, {whence}", addrs.join(", "))
}

/// `users hmi, script and the users of /etc/fieldgate/passwd`.
fn logins(b: &BrokerConfig) -> String {
    let mut parts = Vec::new();
    if !b.users.is_empty() {
        let names: Vec<&str> = b.users.iter().map(|u| u.username.as_str()).collect();
        parts.push(format!("users {}", names.join(", ")));
    }
    if let Some(f) = &b.password_file {
        parts.push(format!("the users of {}", f.display()));
    }
    if parts.is_empty() {
        "no users configured".to_string()
    } else {
        parts.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_patterns_become_wildcards() {
        assert_eq!(wildcard_patterns("%u/+/+/set"), "+/+/+/set");
        assert_eq!(wildcard_patterns("gw/x%c/#"), "gw/+/#");
        assert_eq!(wildcard_patterns("gw/#"), "gw/#");
    }
}
