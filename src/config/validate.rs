//! Checks that serde cannot express and that several sections share: point
//! names, topic templates. Every problem is reported, not just the first.
//!
//! Owns these shared rules only. The checks of one section live beside its
//! stage; the checks across sections live in `crate::settings`.

use super::Report;
use super::types::is_valid_name;

/// Placeholders allowed in `rules.topic`.
pub const TOPIC_PLACEHOLDERS: &[&str] = &["gateway", "device", "point"];

/// Checks the point names of the device at `path`: valid characters and
/// unique within the device (`{path}.points[i].name` in messages).
pub(crate) fn check_point_names<'a>(
    path: &str,
    names: impl IntoIterator<Item = &'a str>,
    report: &mut Report,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let at = format!("{path}.points[{i}].name");
        if !is_valid_name(name) {
            report.add(
                at.clone(),
                format!(
                    "{name:?} is not a valid point name: use letters, digits, `_` and `-` only"
                ),
            );
        }
        if !seen.insert(name) {
            report.add(at, format!("duplicate point name {name:?}"));
        }
    }
}

/// Checks a topic template: known `{placeholders}`, no MQTT wildcards, not empty.
pub(crate) fn check_topic_template(template: &str, path: &str, report: &mut Report) {
    if template.is_empty() {
        report.add(path, "the topic template is empty");
        return;
    }
    if template.contains(['+', '#']) {
        report.add(
            path,
            "a topic to publish on cannot contain the wildcards `+` or `#`",
        );
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            report.add(path, "unclosed `{` in the topic template");
            return;
        };
        let name = &after[..close];
        if !TOPIC_PLACEHOLDERS.contains(&name) {
            report.add(
                path,
                format!(
                    "unknown placeholder {{{name}}}; available: {}",
                    TOPIC_PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        rest = &after[close + 1..];
    }
}
