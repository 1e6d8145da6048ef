//! MQTT topic filters (`+`, `#`) and the topic mapping of `forward` and
//! `commands` entries.
//!
//! Owns matching and prefix arithmetic only. Must not know about the outbox
//! or the network.

/// `true` when `topic` matches the MQTT topic filter `filter` (the broker's
/// matcher: one rule for the whole gateway).
pub use crate::broker::topics::matches;

/// Why a filter is not a valid MQTT topic filter, or `None` when it is.
pub fn filter_problem(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("the filter is empty");
    }
    if filter.contains('\0') {
        return Some("the filter contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Some("`+` must be a whole level");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("#", "x/y"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("site/+/+/+/set", "site/gw/dev/pt/set"));
    }

    #[test]
    fn filter_validation() {
        assert!(filter_problem("a/#").is_none());
        assert!(filter_problem("a/+/b").is_none());
        assert!(filter_problem("a/#/b").is_some());
        assert!(filter_problem("a/b#").is_some());
        assert!(filter_problem("a/b+").is_some());
        assert!(filter_problem("").is_some());
    }
}
