//! The CONNECT phase of a connection: reading it within `connect_timeout`
//! while the socket holds a pending place, the login on a blocking thread,
//! the refusals (CONNACK 1-5 at 3.1/3.1.1, the 5.0 reason codes at 5), and
//! what a 5.0 CONNACK tells the client (receive maximum, maximum packet
//! size, topic alias maximum, an assigned client id, a capped session
//! expiry, a server keep alive). Must not touch the session beyond what
//! [`Attach`] carries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::{Ctx, End};
use crate::broker::auth::Login;
use crate::broker::limits::Limit;
use crate::broker::listener::PendingSlot;
use crate::broker::packet::props::Properties;
use crate::broker::packet::v5::{self, Connect, Packet};
use crate::broker::packet::{self, DecodeError, Protocol, connack, encode5, reason};
use crate::broker::router::Attach;
use crate::broker::session::Peer;
use crate::broker::stats::add;
use tokio_util::sync::CancellationToken;

/// Why a CONNECT is refused; its code depends on the client's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_connections`: 3 / 0x88 Server unavailable.
    Unavailable,
    /// `max_sessions`: 3 / 0x97 Quota exceeded.
    Quota,
    BadCredentials,
    NotAuthorized,
    /// An authentication method (no enhanced authentication): 0x8C.
    BadAuthMethod,
}

impl Refusal {
    fn code(self, v5: bool) -> u8 {
        match (self, v5) {
            (Refusal::Unavailable, false) | (Refusal::Quota, false) => connack::UNAVAILABLE,
            (Refusal::BadCredentials, false) => connack::BAD_CREDENTIALS,
            (Refusal::NotAuthorized, false) | (Refusal::BadAuthMethod, false) => {
                connack::NOT_AUTHORIZED
            }
            (Refusal::Unavailable, true) => reason::SERVER_UNAVAILABLE,
            (Refusal::Quota, true) => reason::QUOTA_EXCEEDED,
            (Refusal::BadCredentials, true) => reason::BAD_USER_NAME_OR_PASSWORD,
            (Refusal::NotAuthorized, true) => reason::NOT_AUTHORIZED,
            (Refusal::BadAuthMethod, true) => reason::BAD_AUTHENTICATION_METHOD,
        }
    }
}

/// Reads the CONNECT, within `deadline` and while no newer socket took
/// `pending`'s place. `None`: the connection is done (refused or closed).
pub(super) async fn read_connect<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut BytesMut,
    peer: SocketAddr,
    ctx: &Ctx,
    pending: PendingSlot,
    deadline: tokio::time::Instant,
) -> Option<Connect>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let stats = &ctx.router.stats;
    let first = tokio::select! {
        _ = pending.evicted.cancelled() => return None, // counted by the listener
        r = tokio::time::timeout_at(deadline, first_packet(rd, buf, ctx)) => r,
    };
    drop(pending);
    match first {
        Ok(Ok(Packet::Connect(c))) => {
            if let Some(w) = &c.will
                && ctx.too_deep(&w.topic, &peer)
            {
                add(&stats.protocol_errors, 1);
                return None;
            }
            Some(*c)
        }
        Ok(Err(End::Violation(DecodeError::Refuse(code)))) => {
            refuse_code(wr, peer, code, false, ctx).await;
            None
        }
        Ok(r) => {
            add(&stats.protocol_errors, 1);
            debug!(%peer, outcome = ?r.map(|_| ()), "first packet is not a valid CONNECT; closing");
            None
        }
        Err(_) => {
            stats.limits.hit(Limit::ConnectTimeout, &peer);
            None
        }
    }
}

/// Reads until the first packet is decoded (a CONNECT at any level).
async fn first_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    ctx: &Ctx,
) -> Result<Packet, End> {
    loop {
        match v5::read_first(buf, ctx.max_packet()) {
            Ok(Some(p)) => {
                add(&ctx.router.stats.messages_received, 1);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(End::Violation(e)),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(End::Closed),
            Ok(n) => add(&ctx.router.stats.bytes_received, n as u64),
            Err(e) => return Err(End::Io(e)),
        }
    }
}

/// Checks the CONNECT's credentials on a blocking thread (PBKDF2 must not
/// hold up the runtime).
pub(super) async fn login(ctx: &Arc<Ctx>, peer: SocketAddr, connect: &Connect) -> Login {
    let auth = ctx.auth.clone();
    let (name, password) = (connect.username.clone(), connect.password.clone());
    tokio::task::spawn_blocking(move || {
        auth.login_from(peer.ip(), name.as_deref(), password.as_deref())
    })
    .await
    .unwrap_or(Login::NotAuthorized)
}

/// Answers a CONNECT with a refusal, then closes.
pub(super) async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    peer: SocketAddr,
    why: Refusal,
    connect: &Connect,
    ctx: &Ctx,
) {
    let v5 = connect.protocol == Protocol::V5;
    refuse_code(wr, peer, why.code(v5), v5, ctx).await;
}

async fn refuse_code<W: AsyncWrite + Unpin>(
    wr: &mut W,
    peer: SocketAddr,
    code: u8,
    v5: bool,
    ctx: &Ctx,
) {
    add(&ctx.router.stats.refused, 1);
    info!(%peer, connack = code, "connection refused");
    let mut b = BytesMut::with_capacity(8);
    match v5 {
        true => encode5::write_connack(&mut b, false, code, &Properties::default()),
        false => packet::write_connack(&mut b, false, code),
    }
    let _ = wr.write_all(&b).await;
    let _ = wr.flush().await;
}

/// Session Expiry Interval of a 5.0 CONNECT, capped by
/// `max_session_expiry` (`u32::MAX`, "never", too).
fn granted_expiry(ctx: &Ctx, connect: &Connect) -> Duration {
    let asked = connect.properties.session_expiry_interval.unwrap_or(0);
    Duration::from_secs(u64::from(asked)).min(ctx.limits.max_session_expiry)
}

/// What a connection attaches to its session as.
pub(super) fn attach_of(
    ctx: &Ctx,
    connect: &Connect,
    client_id: Arc<str>,
    user: Option<Arc<str>>,
    kick: CancellationToken,
) -> Attach {
    let v5 = connect.protocol == Protocol::V5;
    let (persistent, expiry) = match v5 {
        true => {
            let e = granted_expiry(ctx, connect);
            (!e.is_zero(), e)
        }
        false => (!connect.clean_start, ctx.limits.session_expiry),
    };
    let p = &connect.properties;
    Attach {
        client_id,
        clean: connect.clean_start,
        persistent,
        expiry,
        peer: Peer {
            v5,
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            max_packet: p.maximum_packet_size,
            topic_alias_max: p.topic_alias_maximum.unwrap_or(0),
        },
        user,
        no_local: connect.bridge,
        kick,
    }
}

/// The keep-alive a connection runs with: the client's, or the broker's
/// `max_keepalive` when the client asked for more or for none (5.0 only:
/// told in CONNACK).
pub(super) fn keep_alive(ctx: &Ctx, connect: &Connect) -> u16 {
    match (connect.protocol == Protocol::V5, ctx.limits.max_keepalive) {
        (true, Some(max)) if connect.keep_alive == 0 || connect.keep_alive > max => max,
        _ => connect.keep_alive,
    }
}

/// The CONNACK accepting `connect`.
pub(super) fn write_accepted(
    buf: &mut BytesMut,
    ctx: &Ctx,
    connect: &Connect,
    present: bool,
    assigned: Option<&str>,
) {
    if connect.protocol != Protocol::V5 {
        return packet::write_connack(buf, present, connack::ACCEPTED);
    }
    let l = &ctx.limits;
    let asked = connect.properties.session_expiry_interval.unwrap_or(0);
    let granted = granted_expiry(ctx, connect).as_secs() as u32;
    let ka = keep_alive(ctx, connect);
    let p = Properties {
        receive_maximum: (l.receive_maximum < u16::MAX).then_some(l.receive_maximum),
        // the whole packet (the limit is on the remaining length)
        maximum_packet_size: Some((ctx.max_packet() + 5).min(u32::MAX as usize) as u32),
        topic_alias_maximum: (l.max_topic_alias > 0).then_some(l.max_topic_alias),
        assigned_client_identifier: assigned.map(str::to_owned),
        // MQTT-3.2.2-? : the server's value when it differs from the client's
        session_expiry_interval: (granted != asked).then_some(granted),
        server_keep_alive: (ka != connect.keep_alive).then_some(ka),
        ..Properties::default()
    };
    encode5::write_connack(buf, present, reason::SUCCESS, &p);
}
