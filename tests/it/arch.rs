//! The module graph check: imports run one way (wiring → stages → leaves).
//!
//! Reads every `src/**/*.rs`, collects the `crate::` paths it names (in
//! `use` lines, braces included, and in expressions; comments and strings
//! are skipped) and `fieldgate::` paths in the binary, folds them to
//! top-level modules and fails on a cycle or on an edge from a lower layer
//! to a higher one. Edges inside one layer are allowed as long as they form
//! no cycle. Test code (`tests` and `*_tests` files, files under a `tests/`
//! folder, `#[cfg(test)] mod` blocks) is left out: a test may build a whole
//! config. `cargo test --test it arch -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::arch_parse::{code_only, is_test_file, named_modules, without_test_mods};

/// The wiring: the binary, the library root, the config assembler and the
/// `check` output, which name every stage.
const WIRING: &[&str] = &["wiring", "settings", "plan"];
/// The stages of the data flow and the ops endpoints.
const STAGES: &[&str] = &[
    "southbound",
    "rules",
    "broker",
    "bridge",
    "sparkplug",
    "ops",
];
/// Shared leaves: value types and errors, the readings, the Rhai engine,
/// the metrics registry, the last readings and their history, the log
/// throttle, setting broken files aside, the ports ops reaches the other
/// stages through.
const LEAVES: &[&str] = &[
    "config",
    "reading",
    "script",
    "metrics",
    "recent",
    "log_throttle",
    "data_dir",
    "ports",
];
/// Stages that import no other stage, only leaves: ops reads figures from
/// `metrics` and reaches the broker and the point catalogue through
/// `ports`, all handed in by the wiring.
const ISOLATED: &[&str] = &["ops"];

fn layer(module: &str) -> Option<usize> {
    [WIRING, STAGES, LEAVES]
        .iter()
        .position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`lib.rs` and `main.rs`
/// are the wiring).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    match name {
        "lib" | "main" => "wiring".to_string(),
        other => other.to_string(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Edges known to point the wrong way, each with the work that removes it.
/// Listed ones are printed but do not fail; anything else does.
const PENDING: &[(&str, &str, &str)] = &[];

/// Modules and their edges (`from → to`, with the files that make it).
struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<(String, String), BTreeSet<String>>,
}

/// The `src/` folder to read: this crate's, or `FIELDGATE_ARCH_SRC` (to
/// print the graph of another checkout, e.g. an older commit's tree).
fn src_root() -> PathBuf {
    std::env::var_os("FIELDGATE_ARCH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn graph() -> Graph {
    let root = src_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut modules = BTreeSet::new();
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&root).expect("under src");
        let from = module_of(rel);
        modules.insert(from.clone());
        if is_test_file(rel) {
            continue;
        }
        let code = without_test_mods(&code_only(
            &std::fs::read_to_string(file).expect("read source"),
        ));
        let mut named = named_modules(&code, "crate::");
        if from == "wiring" {
            named.extend(named_modules(&code, "fieldgate::"));
        }
        for to in named {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    // A name that is not a module (a root item such as `crate::run`) is
    // an edge to the wiring.
    let known: BTreeSet<String> = modules.clone();
    let edges = edges
        .into_iter()
        .fold(BTreeMap::new(), |mut acc, ((from, to), files)| {
            let to = if known.contains(&to) {
                to
            } else {
                "wiring".to_string()
            };
            if to != from {
                acc.entry((from, to))
                    .or_insert_with(BTreeSet::new)
                    .extend(files);
            }
            acc
        });
    Graph { modules, edges }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            let g = self.g;
            for (from, to) in g.edges.keys() {
                if from != v {
                    continue;
                }
                let w = to.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for m in &g.modules {
        if !t.index.contains_key(m.as_str()) {
            t.visit(m);
        }
    }
    t.out
}

#[test]
fn imports_run_one_way() {
    let g = graph();
    let unplaced: Vec<&String> = g.modules.iter().filter(|m| layer(m).is_none()).collect();
    let all_upward: Vec<(&(String, String), &BTreeSet<String>)> = g
        .edges
        .iter()
        .filter(|((from, to), _)| match (layer(from), layer(to)) {
            (Some(f), Some(t)) => t < f,
            _ => false,
        })
        .collect();
    let pending = |from: &str, to: &str| PENDING.iter().any(|(f, t, _)| *f == from && *t == to);
    let (known, upward): (Vec<_>, Vec<_>) = all_upward
        .into_iter()
        .partition(|((from, to), _)| pending(from, to));
    // A cycle closed only by a pending edge is reported with that edge.
    let mut open = Graph {
        modules: g.modules.clone(),
        edges: g.edges.clone(),
    };
    open.edges.retain(|(from, to), _| !pending(from, to));
    let all_cycles = cycles(&g);
    let cycles = cycles(&open);

    println!("modules ({}):", g.modules.len());
    for m in &g.modules {
        println!("  {m} (layer {:?})", layer(m));
    }
    println!("edges ({}):", g.edges.len());
    for ((from, to), files) in &g.edges {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        println!("  {from} -> {to}  [{}]", files.join(", "));
    }
    println!("cycles ({}):", all_cycles.len());
    for c in &all_cycles {
        println!("  {}", c.join(" <-> "));
    }
    println!("pending upward edges ({}):", known.len());
    for ((from, to), files) in &known {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let why = PENDING
            .iter()
            .find(|(f, t, _)| f == from && t == to)
            .map_or("", |p| p.2);
        println!("  {from} -> {to}  [{}]: {why}", files.join(", "));
    }
    println!("upward edges ({}):", upward.len());
    for ((from, to), files) in &upward {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        println!("  {from} -> {to}  [{}]", files.join(", "));
    }
    let stage = |m: &str| STAGES.contains(&m);
    let sideways: Vec<_> = g
        .edges
        .iter()
        .filter(|((from, to), _)| stage(from) && stage(to))
        .collect();
    println!("edges between stages ({}):", sideways.len());
    for ((from, to), files) in &sideways {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        println!("  {from} -> {to}  [{}]", files.join(", "));
    }
    let out_of_isolated: Vec<_> = sideways
        .iter()
        .filter(|((from, _), _)| ISOLATED.contains(&from.as_str()))
        .collect();
    for m in ISOLATED {
        let out: Vec<&str> = g
            .edges
            .keys()
            .filter(|(from, _)| from == m)
            .map(|(_, to)| to.as_str())
            .collect();
        println!("edges out of {m} ({}): {}", out.len(), out.join(", "));
    }

    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to WIRING, STAGES or LEAVES): {unplaced:?}"
    );
    assert!(
        cycles.is_empty(),
        "import cycles (besides pending edges): {cycles:?}"
    );
    assert!(
        upward.is_empty(),
        "imports from a lower layer to a higher one: {upward:?}"
    );
    assert!(
        out_of_isolated.is_empty(),
        "imports from {ISOLATED:?} into another stage (go through a leaf): {out_of_isolated:?}"
    );
}

/// Edges between sibling files of one folder module (`use super::x` in
/// `x`'s sibling), by folder: `"rules"` -> {("api", "state"), ...}.
fn sibling_edges() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let root = src_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&root).expect("under src");
        let (Some(dir), Some(stem)) = (rel.parent(), rel.file_stem()) else {
            continue;
        };
        let stem = stem.to_string_lossy().into_owned();
        if stem == "mod" || dir.as_os_str().is_empty() || is_test_file(rel) {
            continue;
        }
        let folder = root.join(dir);
        let code = without_test_mods(&code_only(
            &std::fs::read_to_string(file).expect("read source"),
        ));
        for name in named_modules(&code, "super::") {
            let sibling = folder.join(format!("{name}.rs")).is_file()
                || folder.join(&name).join("mod.rs").is_file();
            if sibling && name != stem {
                out.entry(dir.display().to_string())
                    .or_default()
                    .insert((stem.clone(), name));
            }
        }
    }
    out
}

/// The circles among sibling files, one line each (`folder: a <-> b`).
/// No folder is exempt.
fn sibling_circles(edges_by_folder: BTreeMap<String, BTreeSet<(String, String)>>) -> Vec<String> {
    let mut circles = Vec::new();
    for (folder, edges) in edges_by_folder {
        let g = Graph {
            modules: edges
                .iter()
                .flat_map(|(a, b)| [a.clone(), b.clone()])
                .collect(),
            edges: edges.into_iter().map(|e| (e, BTreeSet::new())).collect(),
        };
        for c in cycles(&g) {
            circles.push(format!("{folder}: {}", c.join(" <-> ")));
        }
    }
    circles
}

#[test]
fn sibling_files_do_not_import_each_other_in_a_circle() {
    let circles = sibling_circles(sibling_edges());
    println!("file cycles inside a module ({}):", circles.len());
    for c in &circles {
        println!("  {c}");
    }
    assert!(
        circles.is_empty(),
        "files importing each other: {circles:?}"
    );
}

#[test]
fn a_circle_under_bridge_is_reported_like_any_other() {
    let edge = |a: &str, b: &str| (a.to_string(), b.to_string());
    let by_folder: BTreeMap<String, BTreeSet<(String, String)>> = [
        (
            "bridge/forward".to_string(),
            [edge("report", "window"), edge("window", "report")].into(),
        ),
        ("rules".to_string(), [edge("engine", "mapping")].into()),
    ]
    .into();
    assert_eq!(
        sibling_circles(by_folder),
        vec!["bridge/forward: report <-> window".to_string()]
    );
}

/// Unit-test files in the older layouts (a `#[path]` `*_tests.rs`, a
/// `tests.rs`, a `tests/` folder), left in trees other work was changing
/// when the one layout (an inline `mod tests`, docs/design.md "Where tests
/// live") was chosen. Moving one inline removes it from this list.
const OLD_TEST_LAYOUT: &[&str] = &["bridge/forward/tests", "bridge/forward/tests.rs"];

/// Every file and folder below `root` (build output, `.git` and node
/// modules left out), relative to it.
pub(crate) fn all_paths(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            if ["target", ".git", "node_modules"]
                .iter()
                .any(|n| name == *n)
            {
                continue;
            }
            out.push(p.strip_prefix(root).expect("under the root").to_path_buf());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Test files and folders under `root` in a layout other than the inline
/// `mod tests`, outside `OLD_TEST_LAYOUT` (paths relative to `root`; what
/// is inside such a folder is not listed again).
fn new_test_files_in_old_layouts(root: &Path) -> Vec<String> {
    let is_old = |p: &Path| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if root.join(p).is_dir() {
            name == "tests"
        } else {
            name == "tests.rs" || name.ends_with("_tests.rs")
        }
    };
    all_paths(root)
        .into_iter()
        .filter(|p| {
            is_old(p)
                && !p
                    .ancestors()
                    .skip(1)
                    .any(|a| a.file_name().is_some_and(|n| n == "tests"))
        })
        .map(|p| p.display().to_string())
        .filter(|p| !OLD_TEST_LAYOUT.contains(&p.as_str()))
        .collect()
}

#[test]
fn unit_tests_are_inline_modules() {
    let found = new_test_files_in_old_layouts(&src_root());
    assert!(
        found.is_empty(),
        "unit tests outside the one layout (an inline `#[cfg(test)] mod tests {{ ... }}` \
         at the end of the file; docs/design.md, \"Where tests live\"): {found:?}"
    );
}

#[test]
fn a_new_test_file_in_an_old_layout_is_caught() {
    let dir = std::env::temp_dir().join(format!("fieldgate-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for f in [
        "rules/engine_tests.rs",
        "rules/tests.rs",
        "ops/tests/a.rs",
        "script/tests.rs",
    ] {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().expect("a folder")).expect("mkdir");
        std::fs::write(&p, "").expect("write");
    }
    let found = new_test_files_in_old_layouts(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        [
            "ops/tests",
            "rules/engine_tests.rs",
            "rules/tests.rs",
            "script/tests.rs"
        ]
    );
}
