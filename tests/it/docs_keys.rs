//! The config keys the loader accepts, found by asking it: a probe key
//! (`zz_probe`) put into each mapping makes the loader's unknown-key error
//! list every key that mapping takes ("unknown field `zz_probe`, expected
//! one of ..."), and each of those keys is probed in turn. So the set
//! follows the config types (their serde names, `deny_unknown_fields`)
//! without a list kept by hand. Used by `docs.rs`.

use std::collections::BTreeSet;
use std::path::Path;

const PROBE: &str = "zz_probe";
/// `metrics:` is `http:` under its older name: the same keys, documented once.
pub(crate) const ALIASES: &[(&str, &str)] = &[("metrics", "http")];
/// How deep mappings nest at most (devices[].points[].x is 3).
const MAX_DEPTH: usize = 6;

/// One step of a key path: a mapping key, or "every element of a list".
#[derive(Clone)]
enum Step {
    Key(String),
    Each,
}

/// The error text the loader gives for `text`, or `None` when it loads.
fn load_error(text: &str) -> Option<String> {
    fieldgate::settings::parse(text, Path::new("probe.yaml"))
        .err()
        .map(|e| e.to_string())
}

/// `{k: v}` with `extra` entries first (`{}` when both are empty).
fn mapping(extra: &str, body: &str) -> String {
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .unwrap_or(body);
    match (extra.is_empty(), body.is_empty()) {
        (true, _) => format!("{{{body}}}"),
        (false, true) => format!("{{{extra}}}"),
        (false, false) => format!("{{{extra}, {body}}}"),
    }
}

/// Flow YAML for `value` placed at `path` under a config that is valid
/// otherwise (`gateway.id` given; a device gets its `kind`).
fn config_with(path: &[Step], kind: Option<&str>, value: &str) -> String {
    let mut inner = value.to_string();
    for (i, step) in path.iter().enumerate().rev() {
        inner = match step {
            Step::Key(k) if i == 0 && k == "gateway" => {
                format!("{{gateway: {}}}", mapping("id: g", &inner))
            }
            Step::Key(k) => format!("{{{k}: {inner}}}"),
            // the device list: each element needs its kind
            Step::Each if i == 1 => match kind {
                Some(kind) => format!("[{}]", mapping(&format!("kind: {kind}"), &inner)),
                None => format!("[{inner}]"),
            },
            Step::Each => format!("[{inner}]"),
        };
    }
    if path
        .first()
        .is_some_and(|s| matches!(s, Step::Key(k) if k == "gateway"))
    {
        inner
    } else {
        mapping("gateway: {id: g}", &inner)
    }
}

/// The names in backticks after `marker` in `err`, up to the end of its line.
fn names_after(err: &str, marker: &str) -> Option<Vec<String>> {
    let rest = &err[err.find(marker)? + marker.len()..];
    let line = rest.lines().next().unwrap_or("");
    Some(
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The keys of the mapping at `path`, if it is one: what the loader says
/// it expected instead of the probe.
fn mapping_keys(path: &[Step], kind: Option<&str>) -> Option<Vec<String>> {
    let err = load_error(&config_with(path, kind, &format!("{{{PROBE}: 1}}")))?;
    if err.contains(&format!("unknown field `{PROBE}`, there are no fields")) {
        return Some(Vec::new());
    }
    names_after(&err, &format!("unknown field `{PROBE}`, expected "))
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Each => out.push_str("[]"),
        }
    }
    out
}

/// Adds `path` and every key below it to `out`.
fn walk(path: &mut Vec<Step>, kind: Option<&str>, out: &mut BTreeSet<String>) {
    out.insert(render(path));
    if path.len() >= MAX_DEPTH {
        return;
    }
    let keys = match mapping_keys(path, kind) {
        Some(keys) => Some(keys),
        None => {
            // a list of mappings?
            path.push(Step::Each);
            let keys = mapping_keys(path, kind);
            if keys.is_none() {
                path.pop();
            }
            keys
        }
    };
    let Some(keys) = keys else { return };
    let listed = matches!(path.last(), Some(Step::Each));
    for key in keys {
        path.push(Step::Key(key));
        walk(path, kind, out);
        path.pop();
    }
    if listed {
        path.pop();
    }
}

/// The device kinds, as the loader names them when `kind` is missing.
fn device_kinds() -> Vec<String> {
    let err = load_error("{gateway: {id: g}, devices: [{name: d}]}")
        .expect("a device without kind is refused");
    let marker = "missing `kind` (one of: ";
    let rest = &err[err.find(marker).expect("the kinds are listed") + marker.len()..];
    rest.split(')')
        .next()
        .unwrap_or("")
        .split(", ")
        .map(str::to_string)
        .collect()
}

/// Every key path the loader accepts: `gateway.id`, `broker.tls.cert_file`,
/// `devices[].points[].scale` (devices of every kind together),
/// `uplink.forward[].prefix`; intermediate mappings too (`uplink.buffer`).
pub(crate) fn accepted_keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let top = mapping_keys(&[], None).expect("the top level lists its sections");
    for section in top {
        if ALIASES.iter().any(|(alias, _)| *alias == section) {
            out.insert(section);
            continue;
        }
        let mut path = vec![Step::Key(section.clone())];
        if section == "devices" {
            out.insert("devices".to_string());
            out.insert("devices[].kind".to_string());
            for kind in device_kinds() {
                let mut path = vec![Step::Key("devices".into()), Step::Each];
                let keys = mapping_keys(&path, Some(&kind)).unwrap_or_default();
                for key in keys {
                    path.push(Step::Key(key));
                    walk(&mut path, Some(&kind), &mut out);
                    path.pop();
                }
            }
            continue;
        }
        walk(&mut path, None, &mut out);
    }
    out
}

#[test]
fn the_probe_finds_keys_of_every_shape() {
    let keys = accepted_keys();
    for want in [
        "gateway.id",
        "broker.tls.cert_file",
        "broker.users[].password_env",
        "devices[].kind",
        "devices[].points[].scale",
        "devices[].frame.delimiter",
        "uplink.buffer.commit_window",
        "uplink.forward[].prefix",
        "rules.limits.max_operations",
        "metrics",
        "http.history_bucket",
    ] {
        assert!(keys.contains(want), "{want} not found in {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.contains(PROBE)));
}
