//! The MQTT 5 properties of a row sent from the outbox: what is left of
//! its message expiry (a row past it is not sent), the request/response
//! properties a local client gave it (`outbox::RowProps`), and the replay
//! user properties of a row that waited for the uplink. A 3.1.1 uplink
//! writes none of them (`upstream/wire.rs`).
//!
//! Owns that arithmetic. Must not do I/O.

use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::bridge::outbox::RowProps;

/// User property of a message sent after it waited for the uplink.
pub const REPLAY: &str = "fieldgate-replay";
/// User property: when the message was committed, ms since the epoch.
pub const REPLAY_TS: &str = "fieldgate-ts";

/// What is left of a row's message expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The row has none.
    Never,
    /// Seconds left (at least 1).
    Left(u32),
    /// Past it: dropped, never sent stale.
    Past,
}

/// What is left at `now_ms` of `expiry_s` seconds from `created_ms` (both
/// wall-clock ms since the epoch: the reading aged in real time, outages
/// and restarts included).
pub fn remaining(expiry_s: u32, created_ms: i64, now_ms: i64) -> Expiry {
    if expiry_s == 0 {
        return Expiry::Never;
    }
    let waited_ms = now_ms.saturating_sub(created_ms).max(0);
    let left_ms = i64::from(expiry_s) * 1000 - waited_ms;
    if left_ms <= 0 {
        return Expiry::Past;
    }
    // whole seconds, rounded down, at least one
    Expiry::Left(((left_ms / 1000) as u32).max(1))
}

/// The properties of a row: its expiry left, the request/response
/// properties it was stored with (`stored`), and the replay marks when
/// `replay_ts` (the commit time) is given (after the stored user
/// properties, whose order MQTT keeps).
pub fn row_properties(
    expiry: Expiry,
    stored: Option<RowProps>,
    replay_ts: Option<i64>,
) -> Option<PublishProperties> {
    let left = match expiry {
        Expiry::Left(s) => Some(s),
        Expiry::Never | Expiry::Past => None,
    };
    if left.is_none() && replay_ts.is_none() && stored.is_none() {
        return None;
    }
    let stored = stored.unwrap_or_default();
    let mut user = stored.user;
    if let Some(ts) = replay_ts {
        user.push((REPLAY.to_string(), "1".to_string()));
        user.push((REPLAY_TS.to_string(), ts.to_string()));
    }
    Some(PublishProperties {
        message_expiry_interval: left,
        response_topic: stored.response_topic,
        correlation_data: stored.correlation_data,
        user_properties: user,
        ..PublishProperties::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_that_waited_2h_of_3h_has_1h_left_and_one_past_it_is_dropped() {
        let h = 3_600_000;
        assert_eq!(remaining(3 * 3600, 0, 2 * h), Expiry::Left(3600));
        assert_eq!(remaining(3 * 3600, 0, 3 * h), Expiry::Past);
        assert_eq!(remaining(3 * 3600, 0, 3 * h + 1), Expiry::Past);
        assert_eq!(remaining(0, 0, 99 * h), Expiry::Never);
        assert_eq!(remaining(10, 0, 9_500), Expiry::Left(1));
    }

    #[test]
    fn replay_marks_carry_the_commit_time() {
        assert!(row_properties(Expiry::Never, None, None).is_none());
        let p = row_properties(Expiry::Left(5), None, Some(1234)).expect("props");
        assert_eq!(p.message_expiry_interval, Some(5));
        assert_eq!(
            p.user_properties,
            vec![
                ("fieldgate-replay".to_string(), "1".to_string()),
                ("fieldgate-ts".to_string(), "1234".to_string())
            ]
        );
    }
}
