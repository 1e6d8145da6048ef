use super::*;

fn subs(t: &Tree<u32>, topic: &str) -> Vec<u32> {
    let mut v = Vec::new();
    t.for_each_match(topic, |s| v.push(*s));
    v.sort();
    v
}

#[test]
fn filters_and_names() {
    for f in ["#", "a/#", "+", "a/+/b", "+/+", "/", "a//b"] {
        assert!(valid_filter(f), "{f}");
    }
    for f in ["", "a/#/b", "a#", "a+", "+a/b", "##"] {
        assert!(!valid_filter(f), "{f}");
    }
    assert!(valid_topic("a/b") && !valid_topic("a/+") && !valid_topic(""));
    assert!(matches("a/#", "a") && matches("+/b", "x/b") && !matches("#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS/broker/uptime"));
}

#[test]
fn tree_matches_like_the_filter_rules() {
    let mut t = Tree::default();
    let filters = ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "+/+/c"];
    for (i, f) in filters.iter().enumerate() {
        t.insert(f, i as u32, |s| *s == i as u32);
    }
    assert_eq!(t.len(), filters.len());
    for topic in ["a/b", "a", "x/b", "a/b/c", "$SYS/x", "$x/b", "q"] {
        let want: Vec<u32> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| matches(f, topic))
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(subs(&t, topic), want, "{topic}");
    }
}

#[test]
fn removal_prunes_and_replacing_keeps_one_entry() {
    let mut t = Tree::default();
    t.insert("a/+/c", 1u32, |s| *s == 1);
    t.insert("a/+/c", 1u32, |s| *s == 1);
    assert_eq!(t.len(), 1);
    assert!(t.remove("a/+/c", |s| *s == 1));
    assert!(!t.remove("a/+/c", |s| *s == 1));
    assert!(t.is_empty());
    assert_eq!(
        t.nodes.iter().filter(|n| n.is_some()).count(),
        1,
        "only the root is left"
    );
}

#[test]
fn topics_of_65535_levels_do_not_overflow_the_stack() {
    let deep = "/".repeat(65_534);
    let mut t = Tree::default();
    t.insert(&deep, 1u32, |s| *s == 1);
    let plus = vec!["+"; 65_535].join("/");
    t.insert(&plus, 2u32, |s| *s == 2);
    // run on a small stack: a recursive walk would abort the process
    let h = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || (subs(&t, &deep), matches(&plus, &deep)))
        .expect("thread");
    assert_eq!(h.join().expect("no overflow"), (vec![1, 2], true));
}

#[test]
fn many_branches_at_once_match_like_the_filter_rules() {
    // every filter of 10 levels that is "a" or "+" at each level, and "#"
    // after each prefix: hundreds of branches pending in one walk (more
    // than the walk keeps inline)
    let mut t = Tree::default();
    let mut filters = Vec::new();
    for bits in 0u32..1 << 10 {
        let levels: Vec<&str> = (0..10)
            .map(|l| if bits & (1 << l) != 0 { "+" } else { "a" })
            .collect();
        filters.push(levels.join("/"));
        filters.push(format!("{}/#", levels[..5].join("/")));
    }
    for (i, f) in filters.iter().enumerate() {
        t.insert(f, i as u32, |s| *s == i as u32);
    }
    for topic in [
        ["a"; 10].join("/"),
        ["b"; 10].join("/"),
        ["a"; 6].join("/"),
        ["a"; 11].join("/"),
        format!("{}/b", ["a"; 9].join("/")),
    ] {
        let want: Vec<u32> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| matches(f, &topic))
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(subs(&t, &topic), want, "{topic}");
    }
    assert_eq!(subs(&t, &["a"; 10].join("/")).len(), 2048);
}
