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
/// messages do not count as imports). Strings may span lines; raw strings
/// (`r#"..."#`) end only at their own closing quote and hashes; a char
/// literal such as `'"'` opens no string. Line breaks are kept.
pub(crate) fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '\'' if skip_char_literal(&mut chars) => {}
            '"' => skip_string(&mut chars, false, 0, &mut out),
            'r' if raw_string_start(&out, &mut chars).is_some() => {
                let hashes = raw_string_start(&out, &mut chars).unwrap_or(0);
                for _ in 0..=hashes {
                    chars.next(); // the hashes and the opening quote
                }
                skip_string(&mut chars, true, hashes, &mut out);
            }
            c => out.push(c),
        }
    }
    out
}

/// At an `r`: the number of `#` of a raw string that starts here (`r"`,
/// `r#"`, `br"`), `None` when the `r` ends an identifier or starts one.
fn raw_string_start(
    before: &str,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Option<usize> {
    let prev = before.chars().last();
    if prev.is_some_and(|p| (p.is_alphanumeric() || p == '_') && p != 'b') {
        return None;
    }
    let mut ahead = chars.clone();
    let mut hashes = 0;
    loop {
        match ahead.next() {
            Some('#') => hashes += 1,
            Some('"') => return Some(hashes),
            _ => return None,
        }
    }
}

/// Skips a string body up to its closing quote (followed by `hashes` `#`
/// for a raw string, where `\` escapes nothing), keeping its line breaks.
fn skip_string(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    raw: bool,
    hashes: usize,
    out: &mut String,
) {
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            out.push('\n');
        }
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' && !raw {
            escaped = true;
            continue;
        }
        if c == '"' {
            let mut ahead = chars.clone();
            if (0..hashes).all(|_| ahead.next() == Some('#')) {
                for _ in 0..hashes {
                    chars.next();
                }
                return;
            }
        }
    }
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

/// A set of module names, for the tests.
fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn test_modules_are_left_out() {
    let code = "use crate::reading::Qos;\n#[cfg(test)]\nmod tests {\n    use crate::settings::parse;\n    fn f() { if x { crate::bridge::y(); } }\n}\nfn g() { crate::metrics::get(); }\n#[cfg(test)]\nmod other;\n";
    let named = named_modules(&without_test_mods(code), "crate::");
    let want = names(&["reading", "metrics"]);
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
    let want = names(&["config", "reading", "metrics"]);
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
    let want = names(&["bridge", "ops", "rules", "broker"]);
    assert_eq!(named, want);
}

#[test]
fn strings_over_lines_and_raw_strings_hide_nothing() {
    let code = code_only(
        "let a = \"x {\n  y\"; use crate::bridge::x;\n\
         let b = r#\"{\"k\": \"v\"}\"#; crate::ops::f();\n\
         let c = r\"\\\"; crate::rules::g();\n\
         let d = br##\"a\"#b\"##; crate::broker::h(); // crate::plan\n\
         let e = \"crate::settings\"; let r#type = 1; crate::metrics::m();",
    );
    let named = named_modules(&code, "crate::");
    let want = names(&["bridge", "ops", "rules", "broker", "metrics"]);
    assert_eq!(named, want);
    assert_eq!(code.lines().count(), 6);
}
