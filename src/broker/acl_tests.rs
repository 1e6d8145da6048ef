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
