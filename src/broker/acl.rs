//! `broker.acl`: who may publish to, receive from and subscribe to which
//! topics, and the MQTT topic-filter algebra it needs (match, overlap,
//! cover, syntax check).
//!
//! Owns the compiled rules and the pure filter functions. Must not know
//! about connections, sessions or packets: the broker core asks
//! [`Acl::can_write`] per PUBLISH (and will), [`Acl::can_subscribe`] per
//! SUBSCRIBE filter and [`Acl::can_read`] per delivered message. Every walk
//! over topic levels is a loop, never recursion, so 65,535-level topics
//! cannot overflow the stack.
//!
//! Rules: a rule applies to its `user`, or to every client (anonymous too)
//! when `user` is `*`. `%u` and `%c` in a filter are replaced by the user
//! name and the client id. A filter with `%u` never matches an anonymous
//! client. An allow filter whose substituted name contains `/`, `+` or `#`
//! matches nothing (a client id `+` must not widen `devices/%c/#`); a deny
//! filter is substituted as is (at worst it denies more). Deny wins over
//! allow; what no rule allows is denied.

use std::borrow::Cow;

use super::config::AclRule;
use super::topics::dollar;
pub(crate) use super::topics::matches;

/// What a filter grants (or, for `Deny`, takes away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Kind {
    fn reads(self) -> bool {
        matches!(self, Kind::Read | Kind::ReadWrite)
    }
    fn writes(self) -> bool {
        matches!(self, Kind::Write | Kind::ReadWrite)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: every client (`*`).
    user: Option<String>,
    kind: Kind,
    filter: String,
}

/// The compiled `broker.acl` rules.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Compiles `rules` (checked by [`super::auth::validate`] at config load).
    pub fn new(rules: &[AclRule]) -> Acl {
        let mut entries = Vec::new();
        for r in rules {
            let user = (r.user != "*").then(|| r.user.clone());
            for (kind, list) in [
                (Kind::Read, &r.read),
                (Kind::Write, &r.write),
                (Kind::ReadWrite, &r.readwrite),
                (Kind::Deny, &r.deny),
            ] {
                entries.extend(list.iter().map(|f| Entry {
                    user: user.clone(),
                    kind,
                    filter: f.clone(),
                }));
            }
        }
        Acl { entries }
    }

    /// May this client PUBLISH to `topic` (or leave a will on it)?
    pub fn can_write(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(user, client_id, topic, Kind::writes)
    }

    /// May this client receive a message published to `topic`?
    pub fn can_read(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(user, client_id, topic, Kind::reads)
    }

    /// SUBSCRIBE: false (SUBACK 0x80) when no read/readwrite rule's filter
    /// can match any topic the subscription filter matches, or a deny rule
    /// covers every topic it matches. Otherwise true (delivery is then
    /// filtered per message by [`Acl::can_read`]).
    pub fn can_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        let mut allowed = false;
        for (kind, f) in self.applicable(user, client_id) {
            if kind == Kind::Deny {
                if covers(&f, filter) {
                    return false;
                }
            } else if kind.reads() && !allowed {
                allowed = overlaps(&f, filter);
            }
        }
        allowed
    }

    fn check(
        &self,
        user: Option<&str>,
        client_id: &str,
        topic: &str,
        grants: fn(Kind) -> bool,
    ) -> bool {
        let mut allowed = false;
        for (kind, f) in self.applicable(user, client_id) {
            if kind == Kind::Deny {
                if matches(&f, topic) {
                    return false;
                }
            } else if grants(kind) && !allowed {
                allowed = matches(&f, topic);
            }
        }
        allowed
    }

    /// The filters of the rules for this client, `%u`/`%c` substituted;
    /// filters that cannot apply to it are left out.
    fn applicable<'a>(
        &'a self,
        user: Option<&'a str>,
        client_id: &'a str,
    ) -> impl Iterator<Item = (Kind, Cow<'a, str>)> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.user.is_none() || e.user.as_deref() == user)
            .filter_map(move |e| {
                substitute(&e.filter, user, client_id, e.kind == Kind::Deny).map(|f| (e.kind, f))
            })
    }
}

/// `filter` with `%u` and `%c` replaced (in one pass: a name containing
/// `%c` stays literal). `None` when it names the user and the client is
/// anonymous, or, for an allow filter (`deny` false), when a substituted
/// name contains `/`, `+` or `#`.
fn substitute<'a>(
    filter: &'a str,
    user: Option<&str>,
    client_id: &str,
    deny: bool,
) -> Option<Cow<'a, str>> {
    if !filter.contains('%') {
        return Some(Cow::Borrowed(filter));
    }
    let safe = |s: &str| deny || !s.contains(['/', '+', '#']);
    let mut out = String::with_capacity(filter.len() + client_id.len());
    let mut rest = filter;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('u') {
            out.push_str(user.filter(|u| safe(u))?);
            rest = r;
        } else if let Some(r) = after.strip_prefix('c') {
            if !safe(client_id) {
                return None;
            }
            out.push_str(client_id);
            rest = r;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// Is there a topic that both filters match?
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let (mut ai, mut bi) = (a.split('/'), b.split('/'));
    let mut first = true;
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return true,
            // `#` also matches the parent level
            (Some("#"), None) | (None, Some("#")) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("#"), Some(l)) | (Some(l), Some("#")) => return !dollar(first, l),
            (Some("+"), Some(l)) | (Some(l), Some("+")) => {
                if dollar(first, l) {
                    return false;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// Does `outer` match every topic that `inner` matches?
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    let (mut o, mut i) = (outer.split('/'), inner.split('/'));
    let mut first = true;
    loop {
        match (o.next(), i.next()) {
            (None, None) => return true,
            (Some("#"), level) => return !level.is_some_and(|l| dollar(first, l)),
            // at the root `#` matches what `+/#` matches: every topic
            // (a topic has at least one level)
            (Some("+"), Some("#")) if first => return o.next() == Some("#"),
            // `inner`'s `#` also matches topics `outer`'s non-`#` level
            // does not (the parent, deeper levels)
            (_, Some("#")) | (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(l)) => {
                if dollar(first, l) {
                    return false;
                }
            }
            (Some(x), Some(l)) => {
                if x != l {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// Checks MQTT topic-filter syntax: non-empty, at most 65,535 bytes, no
/// NUL, `#` only as the whole last level, `+` only as a whole level.
pub(crate) fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("must not be empty");
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err("must be at most 65,535 bytes");
    }
    if filter.contains('\0') {
        return Err("must not contain NUL");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return Err("`#` must be the last level and alone in it");
        }
        if level.contains('+') && level != "+" {
            return Err("`+` must be alone in its level");
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
