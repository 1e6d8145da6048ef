//! The module graph check's reader: which files are test code, and which
//! `crate::` modules a file names (comments, strings and `#[cfg(test)]`
//! modules skipped). Used by `arch.rs`.

use std::collections::BTreeSet;
use std::path::Path;

/// A test-only file: left out of the graph.
pub(crate) fn is_test_file(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || rel.components().any(|c| c.as_os_str() == "tests")
}

/// `code` without its `#[cfg(test)] mod name { ... }` blocks.
pub(crate) fn without_test_mods(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "#[cfg(test)]".len()..];
        let head = after.trim_start();
        let brace = head.find('{');
        let semi = head.find(';');
        match (brace, semi) {
            (Some(b), s) if head.starts_with("mod ") && s.is_none_or(|s| b < s) => {
                let mut depth = 0;
                let mut end = head.len();
                for (j, c) in head.char_indices().skip(b) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &head[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The text without `//` comments and string literals (so doc links and
/// messages do not count as imports).
pub(crate) fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '\'' && skip_char_literal(&mut chars) {
                continue;
            }
            if c == '"' {
                in_str = true;
                prev = ' ';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// After a `'`: skips a char literal (`'"'`, `'\''`, `'\u{22}'`) and says
/// so; a lifetime (`'a`) is left alone. Without this a `'"'` would open a
/// string that hides the rest of its line.
fn skip_char_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    let literal_len = match ahead.next() {
        Some('\\') => {
            // an escape: the escaped char, then up to the closing quote
            if ahead.next().is_none() {
                return false;
            }
            let mut n = 2;
            loop {
                n += 1;
                match ahead.next() {
                    Some('\'') => break n,
                    Some(_) if n < 12 => {}
                    _ => return false,
                }
            }
        }
        Some(_) if ahead.next() == Some('\'') => 2,
        _ => return false,
    };
    for _ in 0..literal_len {
        chars.next();
    }
    true
}

pub(crate) fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named after each `prefix` (`crate::`), including
/// every item of a `prefix{a::x, b}` group.
pub(crate) fn named_modules(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && !c.is_whitespace() => {
                        item_start = false;
                        let id = ident_at(&group[j..]);
                        if !id.is_empty() && id != "self" {
                            found.insert(id.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(after);
            if !id.is_empty() {
                found.insert(id.to_string());
            }
        }
    }
    found
}

#[test]
fn test_modules_are_left_out() {
    let code = "use crate::reading::Qos;\n#[cfg(test)]\nmod tests {\n    use crate::settings::parse;\n    fn f() { if x { crate::bridge::y(); } }\n}\nfn g() { crate::metrics::get(); }\n#[cfg(test)]\nmod other;\n";
    let named = named_modules(&without_test_mods(code), "crate::");
    let want: BTreeSet<String> = ["reading", "metrics"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(named, want);
    assert!(is_test_file(Path::new("broker/acl_tests.rs")));
    assert!(is_test_file(Path::new("broker/store/tests/files.rs")));
    assert!(!is_test_file(Path::new("broker/acl.rs")));
}

#[test]
fn the_parser_sees_groups_and_skips_comments() {
    let code = code_only(
        "use crate::{config::{TimeSpan, Report}, reading::Qos};\n\
         // crate::bridge::x\n\
         let m = \"crate::ops\"; crate::metrics::get();\n\
         use fieldgate::config; notcrate::broker;",
    );
    let named = named_modules(&code, "crate::");
    let want: BTreeSet<String> = ["config", "reading", "metrics"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(named, want);
}

#[test]
fn a_char_literal_quote_hides_nothing() {
    let code = code_only(
        "let q = '\"'; use crate::bridge::x;\n\
         let e = '\\''; let b = b'\"'; crate::ops::f();\n\
         fn f<'a>(s: &'a str) -> &'a str { crate::rules::g(s) }\n\
         let u = '\\u{22}'; crate::broker::h(); let s = \"crate::plan\";",
    );
    let named = named_modules(&code, "crate::");
    let want: BTreeSet<String> = ["bridge", "ops", "rules", "broker"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(named, want);
}
