//! Primary host awareness (Sparkplug 3.0): reading the retained
//! `spBv1.0/STATE/{host_id}` message, JSON `{"online": bool, "timestamp":
//! ms}`, and ignoring one older than the last the node acted on (the
//! specification's rule against a stale retained STATE).
//!
//! Owns [`HostWatch`]. Must not publish or know devices.

use serde::Deserialize;
use tracing::warn;

#[derive(Deserialize)]
struct State {
    online: bool,
    timestamp: u64,
}

/// The primary host's state as last seen.
#[derive(Debug, Default)]
pub struct HostWatch {
    last: Option<(bool, u64)>,
}

impl HostWatch {
    /// Reads one STATE payload. `Some(online)` when it is news (the first,
    /// or a change with a timestamp not older than the last one taken);
    /// `None` for a repeat, a stale one, or a payload that is not 3.0's
    /// JSON (logged: a 2.2 host's `ONLINE` / `OFFLINE` string says so).
    pub fn on_state(&mut self, payload: &[u8]) -> Option<bool> {
        let state: State = match serde_json::from_slice(payload) {
            Ok(s) => s,
            Err(e) => {
                warn!(payload = %String::from_utf8_lossy(payload), error = %e,
                    "STATE payload is not Sparkplug 3.0's {{\"online\", \"timestamp\"}}; ignored");
                return None;
            }
        };
        if let Some((online, ts)) = self.last
            && (state.timestamp < ts || state.online == online)
        {
            if state.timestamp >= ts {
                self.last = Some((online, state.timestamp));
            }
            return None;
        }
        self.last = Some((state.online, state.timestamp));
        Some(state.online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_repeated_states_are_ignored() {
        let mut h = HostWatch::default();
        assert_eq!(
            h.on_state(br#"{"online":false,"timestamp":5}"#),
            Some(false)
        );
        assert_eq!(h.on_state(br#"{"online":true,"timestamp":10}"#), Some(true));
        assert_eq!(h.on_state(br#"{"online":true,"timestamp":11}"#), None);
        assert_eq!(
            h.on_state(br#"{"online":false,"timestamp":9}"#),
            None,
            "stale"
        );
        assert_eq!(h.on_state(b"OFFLINE"), None);
        assert_eq!(
            h.on_state(br#"{"online":false,"timestamp":12}"#),
            Some(false)
        );
    }
}
