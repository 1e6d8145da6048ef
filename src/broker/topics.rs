//! Topic names, topic filters and the subscription tree.
//!
//! Owns the rules of MQTT 3.1.1 section 4.7 (valid names and filters,
//! `+`, `#`, `$` topics) and [`Tree`], which maps filters to subscribers.
//! Every walk is a loop over an explicit stack, never recursion: topics
//! and filters of 65,535 levels cannot overflow the stack. Must not know
//! about sessions beyond the opaque subscriber value it stores.

use std::collections::HashMap;

/// A PUBLISH or will topic: not empty, no wildcards (MQTT-3.3.2-1/2, 4.7.3-1).
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#'])
}

/// A subscription filter: not empty; `#` only as the whole last level,
/// `+` only as a whole level (MQTT-4.7.1-1/2/3).
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(l) = levels.next() {
        let last = levels.peek().is_none();
        if (l.contains('#') && (l != "#" || !last)) || (l.contains('+') && l != "+") {
            return false;
        }
    }
    true
}

/// Does the MQTT topic filter `filter` match `topic`? `+` matches one
/// level, `#` the rest including the parent (`a/#` matches `a`); a first
/// level `+` or `#` does not match a topic starting with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (None, None) => return true,
            (Some("#"), level) => return !level.is_some_and(|l| dollar(first, l)),
            (Some("+"), Some(level)) if !dollar(first, level) => {}
            (Some(fl), Some(level)) if fl != "+" && fl == level => {}
            _ => return false,
        }
        first = false;
    }
}

/// `true` on the first level of a `$` topic, which wildcards skip.
pub(crate) fn dollar(first: bool, level: &str) -> bool {
    first && level.starts_with('$')
}

struct Node<S> {
    children: HashMap<Box<str>, usize>,
    plus: Option<usize>,
    /// Subscribers of the filter that ends at this node.
    exact: Vec<S>,
    /// Subscribers of `<this node>/#`.
    hash: Vec<S>,
    parent: Option<(usize, Option<Box<str>>)>,
}

impl<S> Node<S> {
    fn new(parent: Option<(usize, Option<Box<str>>)>) -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            exact: Vec::new(),
            hash: Vec::new(),
            parent,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.hash.is_empty()
    }
}

/// Filters to subscribers `S` (one entry per subscriber and filter).
pub struct Tree<S> {
    nodes: Vec<Option<Node<S>>>,
    free: Vec<usize>,
    count: usize,
}

const ROOT: usize = 0;

impl<S: Clone + PartialEq> Default for Tree<S> {
    fn default() -> Self {
        Tree {
            nodes: vec![Some(Node::new(None))],
            free: Vec::new(),
            count: 0,
        }
    }
}

impl<S: Clone + PartialEq> Tree<S> {
    fn node(&self, i: usize) -> &Node<S> {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| unreachable!("live node index"))
    }

    fn node_mut(&mut self, i: usize) -> &mut Node<S> {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| unreachable!("live node index"))
    }

    fn alloc(&mut self, n: Node<S>) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(n);
                i
            }
            None => {
                self.nodes.push(Some(n));
                self.nodes.len() - 1
            }
        }
    }

    /// Subscriptions stored.
    pub fn len(&self) -> usize {
        self.count
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces (by `same`) the subscriber of `filter`.
    pub fn insert(&mut self, filter: &str, sub: S, same: impl Fn(&S) -> bool) {
        let (node, hash) = self.walk_create(filter);
        let n = self.node_mut(node);
        let list = if hash { &mut n.hash } else { &mut n.exact };
        match list.iter_mut().find(|s| same(s)) {
            Some(s) => *s = sub,
            None => {
                list.push(sub);
                self.count += 1;
            }
        }
    }

    /// Removes the subscriber (by `same`) of `filter`; `true` when it was there.
    pub fn remove(&mut self, filter: &str, same: impl Fn(&S) -> bool) -> bool {
        let Some((node, hash)) = self.walk(filter) else {
            return false;
        };
        let n = self.node_mut(node);
        let list = if hash { &mut n.hash } else { &mut n.exact };
        let before = list.len();
        list.retain(|s| !same(s));
        let removed = list.len() < before;
        if removed {
            self.count -= 1;
            self.prune(node);
        }
        removed
    }

    fn walk_create(&mut self, filter: &str) -> (usize, bool) {
        let mut at = ROOT;
        for level in filter.split('/') {
            if level == "#" {
                return (at, true);
            }
            let next = if level == "+" {
                self.node(at).plus
            } else {
                self.node(at).children.get(level).copied()
            };
            at = match next {
                Some(n) => n,
                None => {
                    let key = (level != "+").then(|| Box::<str>::from(level));
                    let n = self.alloc(Node::new(Some((at, key.clone()))));
                    match key {
                        Some(k) => {
                            self.node_mut(at).children.insert(k, n);
                        }
                        None => self.node_mut(at).plus = Some(n),
                    }
                    n
                }
            };
        }
        (at, false)
    }

    fn walk(&self, filter: &str) -> Option<(usize, bool)> {
        let mut at = ROOT;
        for level in filter.split('/') {
            if level == "#" {
                return Some((at, true));
            }
            at = if level == "+" {
                self.node(at).plus?
            } else {
                *self.node(at).children.get(level)?
            };
        }
        Some((at, false))
    }

    /// Frees empty nodes from `at` up to the root.
    fn prune(&mut self, mut at: usize) {
        while at != ROOT && self.node(at).is_empty() {
            let Some((parent, key)) = self.node_mut(at).parent.take() else {
                return;
            };
            match key {
                Some(k) => {
                    self.node_mut(parent).children.remove(&k);
                }
                None => self.node_mut(parent).plus = None,
            }
            self.nodes[at] = None;
            self.free.push(at);
            at = parent;
        }
    }

    /// Calls `f` for every subscriber whose filter matches `topic` (a
    /// subscriber with several matching filters is seen once per filter).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&S)) {
        let dollar = topic.starts_with('$');
        // depth-first, without allocating for the usual few branches: each
        // entry is a node and where the topic's next level starts
        // (`ALL_MATCHED` once every level is matched); pos 0 is the root
        let mut stack = Stack::new((ROOT, 0usize));
        while let Some((at, pos)) = stack.pop() {
            let n = self.node(at);
            let root_wild = pos == 0 && dollar; // MQTT-4.7.2-1
            if !root_wild {
                n.hash.iter().for_each(&mut f);
            }
            if pos == ALL_MATCHED {
                n.exact.iter().for_each(&mut f);
                continue;
            }
            let rest = &topic[pos..];
            let (level, next) = match rest.find('/') {
                Some(k) => (&rest[..k], pos + k + 1),
                None => (rest, ALL_MATCHED),
            };
            if let Some(&c) = n.children.get(level) {
                stack.push((c, next));
            }
            if let Some(p) = n.plus
                && !root_wild
            {
                stack.push((p, next));
            }
        }
    }
}

/// A position past every level of a topic.
const ALL_MATCHED: usize = usize::MAX;

/// A LIFO stack that keeps its first few entries inline and spills the
/// rest to the heap (a deep match with many `+` branches).
struct Stack<T: Copy> {
    inline: [T; 8],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy> Stack<T> {
    fn new(first: T) -> Self {
        Stack {
            inline: [first; 8],
            len: 1,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, v: T) {
        // the heap part only grows while the inline part is full, so
        // popping the heap part first keeps the order LIFO
        if self.len < self.inline.len() {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(v) = self.spill.pop() {
            return Some(v);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

#[cfg(test)]
mod tests {
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
}
