//! The command topics (docs/design.md §1, "Commands come back"):
//! `{gateway}/{device}/{point}/set`, where a write to a point is asked, and
//! `{gateway}/{device}/{point}/set/result`, where its answer goes.
//!
//! Owns the topic names and reading them back. Must not route, check or
//! answer a command.

/// `{gateway}/{device}/{point}/set`; with `+` for the device and the
/// point, the filter every command matches.
pub fn set_topic(gateway: &str, device: &str, point: &str) -> String {
    format!("{gateway}/{device}/{point}/set")
}

/// `{gateway}/{device}/{point}/set/result`.
pub fn result_topic(gateway: &str, device: &str, point: &str) -> String {
    format!("{}/result", set_topic(gateway, device, point))
}

/// `(device, point)` of a `{gateway}/{device}/{point}/set` topic.
pub fn parse_set_topic<'a>(gateway: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(gateway)?.strip_prefix('/')?;
    let rest = rest.strip_suffix("/set")?;
    let (device, point) = rest.split_once('/')?;
    (!device.is_empty() && !point.is_empty() && !point.contains('/')).then_some((device, point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(set_topic("gw", "+", "+"), "gw/+/+/set");
        assert_eq!(
            result_topic("gw", "boiler", "setpoint"),
            "gw/boiler/setpoint/set/result"
        );
        let topic = set_topic("gw", "boiler", "setpoint");
        assert_eq!(parse_set_topic("gw", &topic), Some(("boiler", "setpoint")));
        assert_eq!(parse_set_topic("gw", "gw/boiler/setpoint"), None);
        assert_eq!(parse_set_topic("gw", "gw2/boiler/setpoint/set"), None);
        assert_eq!(parse_set_topic("gw", "gw/boiler/a/b/set"), None);
    }
}
