//! The documentation against the code: docs/configuration.md names exactly
//! the keys the config loader accepts; no document and no `//!` comment
//! names a source file that does not exist; the README's test command is
//! the one `.ci/run` runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::arch::all_paths;
use crate::docs_keys::{ALIASES, accepted_keys};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The key paths a reference documents: the backticked names in the first
/// cell of every row of a table whose first column is headed `key`.
fn documented_keys(markdown: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in markdown.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            in_key_table = false;
            continue;
        };
        let first = row.split('|').next().unwrap_or("").trim();
        if first == "key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        keys.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    keys
}

#[test]
fn the_configuration_reference_names_every_key_and_no_other() {
    let documented = documented_keys(&read("docs/configuration.md"));
    let accepted = accepted_keys();
    let undocumented: Vec<&String> = accepted.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md and the config types disagree.\n\
         keys the loader accepts that no `key` table row names: {undocumented:?}\n\
         keys the reference names that the loader refuses: {unknown:?}\n\
         (aliases documented once: {ALIASES:?})"
    );
}

#[test]
fn the_key_table_reader_takes_first_cells_of_key_tables_only() {
    let md = "| key | default |\n|---|---|\n| `a.b`, `a.c` | `x` |\n\ntext `a.d`\n\n| signal | fields |\n|---|---|\n| `sine` | `period` |\n";
    let want: BTreeSet<String> = ["a.b", "a.c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(documented_keys(md), want);
}

/// Every file and folder of the repo, as paths relative to it.
fn repo_files() -> BTreeSet<String> {
    all_paths(&repo())
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// The `.rs` file names and `src/...` paths `text` names: runs of path
/// characters ending in `.rs`, or starting with `src/`. Patterns
/// (`*_tests.rs`, `<file>.rs`) are not names.
fn named_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-');
    let mut out = Vec::new();
    for word in text.split(|c: char| !is_path_char(c) && c != '*' && c != '<' && c != '>') {
        let word = word.trim_end_matches(['.', '/']);
        let word = word.trim_start_matches("./");
        if word.contains(['*', '<', '>']) || word.starts_with("//") {
            continue;
        }
        let rs = word.ends_with(".rs") && word.len() > 3;
        let src = word.starts_with("src/") && word.len() > 4;
        if rs || src {
            out.push(word.to_string());
        }
    }
    out
}

/// Whether `name`, found in the file `from`, is a file or folder: for a
/// `//!` comment relative to the file's own folder or one above it, its
/// submodules' folder (`x/` beside `x.rs`), `src/`, `tests/it/` or the repo; in a
/// document, any path that ends with it.
fn exists(name: &str, from: &str, files: &BTreeSet<String>) -> bool {
    if files.contains(name) {
        return true;
    }
    if from.ends_with(".md") {
        let tail = format!("/{name}");
        return files.iter().any(|f| f.ends_with(&tail));
    }
    let from = Path::new(from);
    let submodules = from.with_extension("");
    from.ancestors()
        .skip(1)
        .chain([
            submodules.as_path(),
            Path::new("src"),
            Path::new("tests/it"),
        ])
        .any(|dir| files.contains(&dir.join(name).display().to_string()))
}

/// What a document or module comment says: the whole of a Markdown file,
/// the `//!` lines of a Rust file.
fn prose(rel: &str) -> String {
    let text = read(rel);
    if !rel.ends_with(".rs") {
        return text;
    }
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names of missing files, as `where: name`. CHANGELOG.md is history and
/// may name files that are gone.
fn missing_file_names(files: &BTreeSet<String>) -> Vec<String> {
    let checked = files.iter().filter(|f| {
        let md = f.ends_with(".md") && f.as_str() != "CHANGELOG.md";
        let rs = f.ends_with(".rs")
            && ["src/", "tests/", "benches/"]
                .iter()
                .any(|p| f.starts_with(p));
        (md && (f.as_str() == "README.md" || f.starts_with("docs/"))) || rs
    });
    let mut missing = Vec::new();
    for rel in checked {
        for name in named_paths(&prose(rel)) {
            if !exists(&name, rel, files) {
                missing.push(format!("{rel}: {name}"));
            }
        }
    }
    missing
}

#[test]
fn documents_and_module_comments_name_only_files_that_exist() {
    let missing = missing_file_names(&repo_files());
    assert!(
        missing.is_empty(),
        "files named in README.md, docs/*.md or `//!` comments that do not exist \
         (docs/design.md is the one map of the code):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn a_name_of_a_missing_file_is_caught() {
    let files: BTreeSet<String> = [
        "src",
        "src/bridge",
        "src/bridge/cursor.rs",
        "src/bridge/forward",
        "src/bridge/forward/mod.rs",
        "src/bridge/forward/window.rs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let text = "see `forward.rs` and src/bridge/outbox/, not `window.rs`, \
                bridge/cursor.rs, `*_tests.rs` or https://x.rs";
    let names = named_paths(text);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exists(n, "src/bridge/forward/mod.rs", &files))
        .collect();
    assert_eq!(missing, ["forward.rs", "src/bridge/outbox"]);
    assert!(exists("forward/window.rs", "docs/design.md", &files));
    assert!(!exists("forward.rs", "docs/design.md", &files));
}

#[test]
fn the_readme_gives_the_test_command_ci_runs() {
    let ci = read(".ci/run");
    let mut lines = ci.lines();
    lines
        .find(|l| l.contains("the README's command"))
        .expect(".ci/run has its tests step");
    let command = lines
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .expect("a command after the tests step")
        .trim();
    let readme = read("README.md");
    let shell_lines: Vec<&str> = readme
        .split("```sh")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .flat_map(str::lines)
        .collect();
    assert!(
        shell_lines
            .iter()
            .any(|l| l.trim().ends_with(command) || l.trim().ends_with(&format!("&& {command}"))),
        "README.md's shell blocks do not end a line with `{command}` (what .ci/run runs)"
    );
}

/// The source files and folders docs/design.md does not name: a file by
/// its name (`learn.rs`), a folder (and its `mod.rs`) as `name/`. Test
/// code is left out.
fn unmapped(design: &str, files: &BTreeSet<String>) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.strip_prefix("src/"))
        .filter(|rel| {
            let p = Path::new(rel);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let test = name == "tests.rs"
                || name.ends_with("_tests.rs")
                || p.components().any(|c| c.as_os_str() == "tests");
            let wanted = if name == "mod.rs" || !name.contains('.') {
                let folder = if name == "mod.rs" {
                    p.parent().and_then(|d| d.file_name())
                } else {
                    p.file_name()
                };
                format!(
                    "{}/",
                    folder.map(|n| n.to_string_lossy()).unwrap_or_default()
                )
            } else {
                name
            };
            !test && !design.contains(&wanted)
        })
        .map(|rel| format!("src/{rel}"))
        .collect()
}

#[test]
fn the_design_map_names_every_source_file() {
    let missing = unmapped(&read("docs/design.md"), &repo_files());
    assert!(
        missing.is_empty(),
        "docs/design.md, the one map of the code, does not name these (add each to \
         its folder's table or paragraph): {missing:?}"
    );
}

#[test]
fn an_unmapped_file_or_folder_is_caught() {
    let files: BTreeSet<String> = [
        "src/rules",
        "src/rules/mod.rs",
        "src/rules/engine.rs",
        "src/rules/new.rs",
        "src/sparkplug",
        "src/sparkplug/mod.rs",
        "src/rules/engine_tests.rs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let design = "`rules/`: `mod.rs`, `engine.rs`";
    assert_eq!(
        unmapped(design, &files),
        ["src/rules/new.rs", "src/sparkplug", "src/sparkplug/mod.rs"]
    );
}
