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
mod tests {
    //! Unit tests of [`super`] (ACL rules and the topic-filter algebra). Owns
    //! no production code; must not touch the broker's state.

    use super::*;

    fn rule(user: &str, kind: &str, filters: &[&str]) -> AclRule {
        let list: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let mut r = AclRule {
            user: user.to_string(),
            read: Vec::new(),
            write: Vec::new(),
            readwrite: Vec::new(),
            deny: Vec::new(),
        };
        match kind {
            "read" => r.read = list,
            "write" => r.write = list,
            "readwrite" => r.readwrite = list,
            "deny" => r.deny = list,
            other => panic!("unknown kind {other}"),
        }
        r
    }

    #[test]
    fn matches_follows_mqtt() {
        let yes = [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("+/+", "a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "a/b"),
            ("+", ""),
            ("a/+", "a/"),
            ("/+", "/x"),
            ("+/#", "a"),
            ("$SYS/#", "$SYS/broker/uptime"),
            ("$SYS/+", "$SYS/x"),
            ("a/+", "a/$b"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("a/b", "a/c"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("+", "a/b"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("+", "$SYS"),
            ("a/#", "ab"),
            ("a", "A"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }

    #[test]
    fn overlaps_cases() {
        let yes = [
            ("pi-gw-01/#", "#"),
            ("a/+", "+/b"),
            ("a/#", "a"),
            ("a", "a/#"),
            ("a/b/c", "a/+/#"),
            ("#", "+"),
            ("$SYS/#", "$SYS/+"),
            ("+/+", "a/b"),
        ];
        for (a, b) in yes {
            assert!(overlaps(a, b), "{a} / {b}");
            assert!(overlaps(b, a), "{b} / {a}");
        }
        let no = [
            ("a/b", "a/c"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("#", "$SYS/x"),
            ("+/#", "$SYS/#"),
            ("a/b/#", "a/c/#"),
            ("a", "a/b"),
        ];
        for (a, b) in no {
            assert!(!overlaps(a, b), "{a} / {b}");
            assert!(!overlaps(b, a), "{b} / {a}");
        }
    }

    #[test]
    fn covers_cases() {
        let yes = [
            ("secret/#", "secret/+"),
            ("secret/#", "secret"),
            ("secret/#", "secret/#"),
            ("secret/#", "secret/a/+/b"),
            ("#", "#"),
            ("#", "+/x"),
            ("+/#", "#"),
            ("+", "+"),
            ("a/+", "a/b"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/+/x"),
        ];
        for (o, i) in yes {
            assert!(covers(o, i), "{o} should cover {i}");
        }
        let no = [
            ("secret/#", "#"),
            ("secret/#", "+/x"),
            ("a/+", "a/#"),
            ("a/+/#", "a/#"),
            ("a/b", "a/+"),
            ("a", "a/b"),
            ("a/b", "a"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("a/+", "a"),
        ];
        for (o, i) in no {
            assert!(!covers(o, i), "{o} should not cover {i}");
        }
    }

    #[test]
    fn huge_topics_do_not_overflow_the_stack() {
        // 65,535 empty levels in 65,534 bytes, and 65,535 one-byte levels
        let empty_levels = "/".repeat(65_534);
        let levels = vec!["a"; 65_535].join("/");
        let plus = vec!["+"; 65_535].join("/");
        let run = move || {
            assert!(matches(&empty_levels, &empty_levels));
            assert!(matches("#", &levels));
            assert!(matches(&plus, &levels));
            assert!(!matches(&plus, &empty_levels[1..]));
            assert!(overlaps(&plus, &levels));
            assert!(overlaps(&levels, &format!("{levels}/#")));
            assert!(covers(&plus, &levels));
            assert!(covers(&format!("{plus}/#"), &format!("{levels}/+")));
            assert!(check_filter(&empty_levels).is_ok());
            let acl = Acl::new(&[rule("*", "readwrite", &[&plus])]);
            assert!(acl.can_write(None, "c", &levels));
            assert!(acl.can_subscribe(None, "c", &levels));
        };
        // a small stack: recursion over the levels would overflow it
        let t = std::thread::Builder::new().stack_size(64 * 1024).spawn(run);
        t.unwrap().join().unwrap();
    }

    #[test]
    fn check_filter_syntax() {
        for ok in [
            "a", "#", "+", "a/#", "+/+/#", "/", "a//b", "$SYS/#", "%u/%c/#",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", "empty"),
            ("a/#/b", "`#`"),
            ("a#", "`#`"),
            ("a/#b", "`#`"),
            ("##", "`#`"),
            ("a+", "`+`"),
            ("a/+b", "`+`"),
            ("a\0b", "NUL"),
        ];
        for (f, want) in bad {
            let e = check_filter(f).unwrap_err();
            assert!(e.contains(want), "{f:?}: {e}");
        }
        assert!(check_filter(&"a".repeat(65_536)).is_err());
        assert!(check_filter(&"a".repeat(65_535)).is_ok());
    }

    #[test]
    fn rule_kinds() {
        let acl = Acl::new(&[
            rule("alice", "read", &["r/#"]),
            rule("alice", "write", &["w/#"]),
            rule("alice", "readwrite", &["rw/+"]),
        ]);
        let a = Some("alice");
        assert!(acl.can_read(a, "c", "r/x") && !acl.can_write(a, "c", "r/x"));
        assert!(acl.can_write(a, "c", "w/x") && !acl.can_read(a, "c", "w/x"));
        assert!(acl.can_read(a, "c", "rw/x") && acl.can_write(a, "c", "rw/x"));
        assert!(!acl.can_read(a, "c", "rw/x/y") && !acl.can_write(a, "c", "other"));
        // rules of other users do not apply
        assert!(!acl.can_read(Some("bob"), "c", "r/x"));
        assert!(!acl.can_read(None, "c", "r/x"));
        // subscribe needs a read grant
        assert!(acl.can_subscribe(a, "c", "r/+"));
        assert!(acl.can_subscribe(a, "c", "rw/x"));
        assert!(!acl.can_subscribe(a, "c", "w/#"));
    }

    #[test]
    fn no_rules_deny_everything() {
        let acl = Acl::new(&[]);
        assert!(!acl.can_write(Some("u"), "c", "a"));
        assert!(!acl.can_read(None, "c", "a"));
        assert!(!acl.can_subscribe(None, "c", "#"));
    }

    #[test]
    fn star_applies_to_everyone_including_anonymous() {
        let acl = Acl::new(&[rule("*", "readwrite", &["public/#"])]);
        for user in [None, Some("alice"), Some("bob")] {
            assert!(acl.can_write(user, "c", "public/x"), "{user:?}");
            assert!(acl.can_read(user, "c", "public"), "{user:?}");
            assert!(!acl.can_read(user, "c", "private"), "{user:?}");
        }
    }

    #[test]
    fn user_and_client_substitution() {
        let acl = Acl::new(&[
            rule("*", "readwrite", &["users/%u/#"]),
            rule("*", "write", &["clients/%c/status"]),
            rule("*", "read", &["mixed/%u/%c"]),
            rule("*", "read", &["lit/%x/%"]),
        ]);
        let a = Some("alice");
        assert!(acl.can_write(a, "dev1", "users/alice/x"));
        assert!(!acl.can_write(a, "dev1", "users/bob/x"));
        assert!(!acl.can_write(a, "dev1", "users/%u/x"));
        assert!(acl.can_write(a, "dev1", "clients/dev1/status"));
        assert!(!acl.can_write(a, "dev1", "clients/dev2/status"));
        assert!(acl.can_read(a, "dev1", "mixed/alice/dev1"));
        assert!(acl.can_read(a, "dev1", "lit/%x/%"));
        // a user name containing `%c` is not substituted again
        assert!(acl.can_read(Some("x%cy"), "dev1", "mixed/x%cy/dev1"));
        // %u never matches an anonymous client; %c still does
        assert!(!acl.can_write(None, "dev1", "users//x"));
        assert!(!acl.can_write(None, "dev1", "users/%u/x"));
        assert!(acl.can_write(None, "dev1", "clients/dev1/status"));
        assert!(!acl.can_subscribe(None, "dev1", "users/#"));
        // wildcards or `/` in a substituted name match nothing
        assert!(!acl.can_write(a, "+", "clients/dev2/status"));
        assert!(!acl.can_write(a, "#", "clients/#/status"));
        assert!(!acl.can_write(a, "a/b", "clients/a/b/status"));
        assert!(!acl.can_write(Some("+"), "c", "users/bob/x"));
    }

    #[test]
    fn deny_wins() {
        let acl = Acl::new(&[
            rule("*", "readwrite", &["#"]),
            rule("*", "deny", &["secret/#"]),
            rule("alice", "readwrite", &["secret/alice"]),
            rule("*", "deny", &["clients/%c/admin"]),
        ]);
        let a = Some("alice");
        assert!(acl.can_write(a, "c", "public"));
        assert!(!acl.can_write(a, "c", "secret/alice"));
        assert!(!acl.can_read(a, "c", "secret"));
        assert!(!acl.can_read(None, "c", "secret/x"));
        assert!(!acl.can_write(a, "dev1", "clients/dev1/admin"));
        assert!(acl.can_write(a, "dev1", "clients/dev2/admin"));
        // a deny filter substitutes wildcards as they are: it denies more
        assert!(!acl.can_write(a, "+", "clients/dev2/admin"));
    }

    #[test]
    fn subscribe_cases() {
        let acl = Acl::new(&[rule("gw", "readwrite", &["pi-gw-01/#"])]);
        let gw = Some("gw");
        assert!(acl.can_subscribe(gw, "c", "#"), "# can match pi-gw-01/...");
        assert!(acl.can_subscribe(gw, "c", "+/status"));
        assert!(acl.can_subscribe(gw, "c", "pi-gw-01"));
        assert!(!acl.can_subscribe(gw, "c", "pi-gw-02/#"));
        assert!(!acl.can_subscribe(gw, "c", "$SYS/#"));
        assert!(!acl.can_subscribe(None, "c", "#"));
        // delivery is filtered per message
        assert!(acl.can_read(gw, "c", "pi-gw-01/x"));
        assert!(!acl.can_read(gw, "c", "other/x"));

        let acl = Acl::new(&[
            rule("*", "readwrite", &["#"]),
            rule("*", "deny", &["secret/#"]),
        ]);
        assert!(!acl.can_subscribe(None, "c", "secret/+"));
        assert!(!acl.can_subscribe(None, "c", "secret/#"));
        assert!(!acl.can_subscribe(None, "c", "secret"));
        assert!(acl.can_subscribe(None, "c", "#"));
        assert!(acl.can_subscribe(None, "c", "+/x"));
        assert!(!acl.can_read(None, "c", "secret/x"));
        assert!(acl.can_read(None, "c", "other/x"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_rule() {
        let acl = Acl::new(&[
            rule("*", "read", &["#"]),
            rule("admin", "read", &["$SYS/#"]),
        ]);
        assert!(!acl.can_read(None, "c", "$SYS/broker/uptime"));
        assert!(!acl.can_subscribe(None, "c", "$SYS/#"));
        assert!(acl.can_read(Some("admin"), "c", "$SYS/broker/uptime"));
        assert!(acl.can_subscribe(Some("admin"), "c", "$SYS/broker/+"));
    }
}
