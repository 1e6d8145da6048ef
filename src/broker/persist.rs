//! How the broker core's values become the store's rows and come back:
//! a message with its MQTT 5 properties (kept as the PUBLISH property
//! bytes, so nothing is lost on the way through `broker.db`), its expiry
//! and subscription identifiers; a subscription with its options byte and
//! identifier; a session's expiry clock across restarts (see the session
//! and message expiry model in docs/design.md).
//!
//! Owns these conversions only. Must not hold state, touch the store's SQL
//! or decide what is stored (the router and session do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::message::{Message, MessageProps};
use super::packet::props::{self, In, Properties};
use super::store::{SessionClock, StoredMessage, StoredSub};
use super::subscription::SubOpts;

/// The property bytes of `m` (a PUBLISH's property length and properties).
fn encode_props(m: &MessageProps) -> Bytes {
    let p = Properties {
        payload_format_indicator: m.payload_format,
        content_type: m.content_type.clone(),
        response_topic: m.response_topic.clone(),
        correlation_data: m.correlation_data.clone(),
        user_properties: m.user.clone(),
        ..Properties::default()
    };
    let mut buf = BytesMut::with_capacity(props::wire_len(&p));
    props::write(&mut buf, &p);
    buf.freeze()
}

/// The properties back from their bytes; `None` (they are dropped, the
/// message kept) when the bytes do not decode.
fn decode_props(mut b: Bytes) -> Option<Arc<MessageProps>> {
    let p = props::read(&mut b, In::Publish).ok()?;
    let m = MessageProps {
        payload_format: p.payload_format_indicator,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user: p.user_properties,
    };
    (!m.is_empty()).then(|| Arc::new(m))
}

/// The row of `msg`, delivered at `qos` with `retain`, matching
/// subscriptions `sub_ids`.
pub fn stored_message(msg: &Message, qos: u8, retain: bool, sub_ids: &[u32]) -> StoredMessage {
    StoredMessage {
        topic: msg.topic.to_string(),
        payload: msg.payload.clone(),
        qos,
        retain,
        expires_ms: msg.expires_ms,
        props: msg.props.as_deref().map(encode_props),
        sub_ids: sub_ids.to_vec(),
    }
}

/// The message of a row, with the row's QoS and retain flag.
pub fn message_of(row: StoredMessage) -> Message {
    let mut m = Message::new(row.topic.into(), row.payload, row.qos, row.retain);
    m.expires_ms = row.expires_ms;
    m.props = row.props.and_then(decode_props);
    m
}

/// The row of a subscription.
pub fn stored_sub(filter: &str, o: SubOpts) -> StoredSub {
    StoredSub {
        filter: filter.to_string(),
        opts: o.to_byte(),
        id: o.id,
    }
}

/// A subscription's options back from its row.
pub fn sub_opts(row: &StoredSub) -> SubOpts {
    SubOpts {
        id: row.id,
        ..SubOpts::from_byte(row.opts)
    }
}

/// The stored clock of a session with `expiry`, connected or gone at
/// `gone_ms`.
pub fn clock(expiry: Duration, gone_ms: Option<u64>) -> SessionClock {
    SessionClock {
        expiry_s: Some(u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX)),
        gone_ms,
    }
}

/// A restored session's expiry (its stored interval, at most `cap`; the
/// cap when none was stored) and the instant its client left: the stored
/// time when it had left before the restart (time before the restart
/// counts), `now` when it was connected then.
pub fn restored_clock(
    c: SessionClock,
    cap: Duration,
    now: Instant,
    now_ms: u64,
) -> (Duration, Instant) {
    let expiry = c
        .expiry_s
        .map_or(cap, |s| Duration::from_secs(u64::from(s)).min(cap));
    let away = c.gone_ms.map_or(Duration::ZERO, |t| {
        Duration::from_millis(now_ms.saturating_sub(t))
    });
    (expiry, now.checked_sub(away).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_properties_expiry_and_identifiers_through_a_row() {
        let mut m = Message::new("a/b".into(), Bytes::from_static(b"x"), 1, false);
        m.expires_ms = Some(1_234);
        m.props = Some(Arc::new(MessageProps {
            payload_format: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        }));
        let row = stored_message(&m, 1, true, &[3, 9]);
        assert_eq!(row.sub_ids, vec![3, 9]);
        let back = message_of(row);
        assert_eq!(back.props, m.props);
        assert_eq!(back.expires_ms, Some(1_234));
        assert!(back.retain);
    }

    #[test]
    fn undecodable_property_bytes_drop_the_properties_not_the_message() {
        let mut row = StoredMessage::plain("t".into(), Bytes::from_static(b"p"), 0, false);
        row.props = Some(Bytes::from_static(b"\x05\xff"));
        let m = message_of(row);
        assert!(m.props.is_none());
        assert_eq!(&m.payload[..], b"p");
    }

    #[test]
    fn a_subscription_keeps_its_options_and_identifier() {
        let o = SubOpts {
            qos: 2,
            no_local: true,
            retain_as_published: true,
            id: Some(42),
            retain_handling: 2,
        };
        let back = sub_opts(&stored_sub("a/#", o));
        assert_eq!(back.id, Some(42));
        assert_eq!(
            (back.qos, back.no_local, back.retain_as_published),
            (2, true, true)
        );
    }

    #[test]
    fn a_restored_session_counts_the_time_its_client_was_away_before_the_restart() {
        let now = Instant::now() + Duration::from_secs(3_600);
        let cap = Duration::from_secs(100);
        let gone = SessionClock {
            expiry_s: Some(30),
            gone_ms: Some(10_000),
        };
        let (expiry, left) = restored_clock(gone, cap, now, 25_000);
        assert_eq!(expiry, Duration::from_secs(30));
        assert_eq!(now - left, Duration::from_secs(15));
        let connected = SessionClock {
            expiry_s: Some(500),
            gone_ms: None,
        };
        let (expiry, left) = restored_clock(connected, cap, now, 25_000);
        assert_eq!((expiry, left), (cap, now), "capped, and away from now");
        let old_row = SessionClock::default();
        assert_eq!(restored_clock(old_row, cap, now, 0).0, cap);
    }
}
