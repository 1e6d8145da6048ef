//! One client connection: CONNECT (protocol, client id, login, will),
//! then the read loop with keep-alive, the packet handlers, and the end
//! (will, session detach). The write half runs beside it ([`writer`]).
//!
//! Phases, in the order of [`serve`]: awaiting CONNECT (only CONNECT is
//! valid, within `broker.connect_timeout` of the accept, MQTT-3.1.0-1;
//! the socket holds a [`PendingSlot`] until then), a connection slot
//! (`max_connections`, else CONNACK 3), the login (hashed off the
//! runtime's threads; an address past `login_failures` is refused),
//! refused (CONNACK 1-5, then close) or connected ([`Conn`]: the read loop
//! beside the writer), then ended with an [`End`] that decides the will.
//! A client that owes more than `max_client_buffer` unsent (it does not
//! read its socket) is disconnected. A QoS 1/2 PUBLISH is acknowledged only when the intake (the
//! bridge's outbox) and the store hold it; acknowledgements leave in the
//! order the PUBLISHes came (MQTT-4.6.0-2/3). A protocol violation closes
//! this connection only. Must not touch other connections' sockets.

mod handlers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::auth::{Auth, Login};
use super::limits::{Limit, Limits};
use super::listener::PendingSlot;
use super::message::Message;
use super::packet::{self, Connect, DecodeError, Packet, connack};
use super::router::{Attach, Durable, Router};
use super::session::{Cell, Control, Peer};
use super::stats::add;
use super::writer;

/// Acknowledgements waiting for a commit before the reader pauses.
const MAX_PENDING: usize = 4096;
/// What a connection's read buffer starts at (it grows for large packets
/// and shrinks back once they are read).
const READ_BUFFER: usize = 1024;
/// The read buffer of a connection that sends a lot.
const READ_BURST: usize = 16 * 1024;

/// What every connection shares.
pub struct Ctx {
    pub router: Arc<Router>,
    pub auth: Arc<Auth>,
    pub max_payload: usize,
    /// Connection slots (`max_connections`), taken at CONNECT.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// `broker.websocket_origins`.
    pub websocket_origins: Arc<[String]>,
    pub limits: Limits,
    /// Cancelled when the broker stops.
    pub shutdown: CancellationToken,
}

impl Ctx {
    /// The largest packet read: a payload of `max_payload` plus topic,
    /// packet id and lengths.
    pub fn max_packet(&self) -> usize {
        self.max_payload + 65_535 + 4
    }

    /// Whether `topic` (a name or a filter) has more levels than
    /// `max_topic_levels`; counted when it has.
    fn too_deep(&self, topic: &str, client: &dyn std::fmt::Display) -> bool {
        let levels = topic.bytes().filter(|b| *b == b'/').count() + 1;
        let deep = levels > self.limits.max_topic_levels;
        if deep {
            self.router.stats.limits.hit(Limit::TopicLevels, client);
        }
        deep
    }
}

/// The violation a too deep topic is.
const TOO_DEEP: DecodeError = DecodeError::Invalid("topic deeper than broker.max_topic_levels");

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// DISCONNECT: no will (MQTT-3.14.4-3).
    Disconnect,
    Closed,
    KeepAlive,
    TakenOver,
    /// The client owed more than `max_client_buffer`: it does not read.
    Overflow,
    /// The broker is stopping: no will (the client did nothing wrong).
    Shutdown,
    /// A commit the acknowledgement waited for failed: the message is not
    /// acknowledged, the client sends it again after reconnecting.
    NotDurable,
    Violation(DecodeError),
    Io(std::io::Error),
}

/// Serves one client until it leaves. `pending` is the socket's place
/// among those without CONNECT yet; `deadline` ends the wait for it.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    pending: PendingSlot,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    // boxed, like the other steps before and after the connected part: a
    // task is sized for its largest state, and an idle connection should
    // hold only the read and write loops
    let Some(connect) = Box::pin(read_connect(
        &mut rd, &mut wr, &mut buf, peer, &ctx, pending, deadline,
    ))
    .await
    else {
        return;
    };
    // a slot is taken at CONNECT, and given back before the socket closes
    let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
        return Box::pin(refuse(&mut wr, peer, connack::UNAVAILABLE, &ctx)).await;
    };
    let user = match Box::pin(login(&ctx, peer, &connect)).await {
        Login::Accepted { user } => user,
        Login::BadCredentials => {
            return Box::pin(refuse(&mut wr, peer, connack::BAD_CREDENTIALS, &ctx)).await;
        }
        Login::NotAuthorized => {
            return Box::pin(refuse(&mut wr, peer, connack::NOT_AUTHORIZED, &ctx)).await;
        }
        Login::Throttled => {
            ctx.router
                .stats
                .limits
                .hit(Limit::LoginFailures, &peer.ip());
            return Box::pin(refuse(&mut wr, peer, connack::NOT_AUTHORIZED, &ctx)).await;
        }
    };
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        format!("auto-{:016x}", rand::random::<u64>()).into()
    } else {
        connect.client_id.as_str().into()
    };
    if let (Some(acl), Some(w)) = (&ctx.router.acl, &connect.will)
        && !acl.can_write(user.as_deref(), &client_id, &w.topic)
    {
        return Box::pin(refuse(&mut wr, peer, connack::NOT_AUTHORIZED, &ctx)).await;
    }
    let kick = CancellationToken::new();
    let attach = Attach {
        client_id: client_id.clone(),
        clean: connect.clean_session,
        persistent: !connect.clean_session,
        expiry: ctx.limits.session_expiry,
        peer: Peer::default(),
        user: user.clone(),
        no_local: connect.bridge,
        kick: kick.clone(),
    };
    let Some((cell, present, generation)) = ctx.router.connect(attach) else {
        return Box::pin(refuse(&mut wr, peer, connack::UNAVAILABLE, &ctx)).await;
    };
    let mut ack = BytesMut::with_capacity(4);
    packet::write_connack(&mut ack, present, connack::ACCEPTED);
    if wr.write_all(&ack).await.is_err() {
        ctx.router.disconnect(&cell, generation);
        return;
    }
    add(&ctx.router.stats.messages_sent, 1);
    info!(%peer, client_id = %client_id, clean = connect.clean_session, session_present = present, bridge = connect.bridge, "client connected");
    let mut conn = Conn {
        ctx: ctx.clone(),
        cell: cell.clone(),
        user,
        pending: VecDeque::new(),
        kick,
        overflow: CancellationToken::new(),
    };
    let end = tokio::select! {
        end = conn.read_loop(&mut rd, &mut buf, &connect) => end,
        r = writer::run(wr, cell.clone(), ctx.router.clone(), generation) => match r {
            Ok(()) => End::TakenOver,
            Err(e) => End::Io(e),
        },
    };
    log_end(&ctx, peer, &client_id, &end);
    ctx.router.disconnect(&cell, generation);
    if !matches!(end, End::Disconnect | End::Shutdown)
        && let Some(w) = connect.will
    {
        // MQTT-3.1.2-8: abrupt close, keep-alive expiry, protocol error, takeover
        let msg = Message::new(w.topic.into(), w.payload, w.qos, w.retain);
        Box::pin(ctx.router.publish(msg)).await;
    }
    drop(slot);
    drop(rd);
}

/// Reads the CONNECT, within `deadline` and while no newer socket took
/// `pending`'s place. `None`: the connection is done (refused or closed).
async fn read_connect<R, W>(
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
        r = tokio::time::timeout_at(deadline, next_packet(rd, buf, ctx.max_packet(), &ctx.router)) => r,
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
            refuse(wr, peer, code, ctx).await;
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

/// Checks the CONNECT's credentials on a blocking thread (PBKDF2 must not
/// hold up the runtime).
async fn login(ctx: &Arc<Ctx>, peer: SocketAddr, connect: &Connect) -> Login {
    let auth = ctx.auth.clone();
    let (name, password) = (connect.username.clone(), connect.password.clone());
    tokio::task::spawn_blocking(move || {
        auth.login_from(peer.ip(), name.as_deref(), password.as_deref())
    })
    .await
    .unwrap_or(Login::NotAuthorized)
}

fn log_end(ctx: &Ctx, peer: SocketAddr, client_id: &str, end: &End) {
    match end {
        End::Violation(e) => {
            add(&ctx.router.stats.protocol_errors, 1);
            info!(%peer, client_id, error = %e, "protocol violation; connection closed");
        }
        End::Io(e) => info!(%peer, client_id, error = %e, "connection lost"),
        End::Overflow => {
            ctx.router.stats.limits.hit(Limit::ClientBuffer, &client_id);
        }
        other => info!(%peer, client_id, reason = ?other, "client disconnected"),
    }
}

/// Answers CONNECT with a refusal code, then closes.
async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, peer: SocketAddr, code: u8, ctx: &Ctx) {
    add(&ctx.router.stats.refused, 1);
    info!(%peer, connack = code, "connection refused");
    let mut b = BytesMut::with_capacity(4);
    packet::write_connack(&mut b, false, code);
    let _ = wr.write_all(&b).await;
    let _ = wr.flush().await;
}

/// Sizes the read buffer before a read: a client that sends a lot (its
/// last read filled what was free) gets room for [`READ_BURST`] bytes, one
/// that is quiet again gets [`READ_BUFFER`] back once nothing is pending.
fn size_read_buffer(buf: &mut BytesMut, last_read: usize) {
    let busy = last_read >= READ_BUFFER;
    if buf.is_empty() && !busy && buf.capacity() > 4 * READ_BUFFER {
        *buf = BytesMut::with_capacity(READ_BUFFER);
    } else if busy && buf.capacity() - buf.len() < READ_BURST / 2 {
        buf.reserve(READ_BURST);
    }
}

/// Reads until one whole packet is decoded.
async fn next_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
    router: &Router,
) -> Result<Packet, End> {
    loop {
        match packet::read(buf, max) {
            Ok(Some(p)) => {
                add(&router.stats.messages_received, 1);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(End::Violation(e)),
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(End::Closed),
            Ok(n) => add(&router.stats.bytes_received, n as u64),
            Err(e) => return Err(End::Io(e)),
        }
    }
}

/// A connected client's read side.
struct Conn {
    ctx: Arc<Ctx>,
    cell: Arc<Cell>,
    user: Option<Arc<str>>,
    /// Acknowledgements in packet order, each behind its commit.
    pending: VecDeque<(Control, Option<Durable>)>,
    kick: CancellationToken,
    /// Cancelled when the client owes more than `max_client_buffer`.
    overflow: CancellationToken,
}

impl Conn {
    fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn control(&self, c: Control) {
        let cell = self.cell();
        if !cell.lock().push_control(c, &self.ctx.limits) {
            self.overflow.cancel();
        }
        cell.wake.notify_one();
    }

    /// Sends `c` now, or behind the acknowledgements still waiting.
    fn ack(&mut self, c: Control, durable: Option<Durable>) {
        if durable.is_none() && self.pending.is_empty() {
            self.control(c);
        } else {
            self.pending.push_back((c, durable));
        }
    }

    /// Sends the acknowledgement at the front once its commit is done,
    /// and every ready one behind it; `false` when a commit failed.
    async fn settle_front(&mut self) -> bool {
        // cancel-safe: this runs in a `select!` beside the socket read, so
        // the commit future stays in its entry until it has resolved (no
        // await between its end and the pop)
        if let Some((c, d)) = self.pending.front_mut() {
            if let Some(f) = d.as_mut()
                && !f.as_mut().await
            {
                return false;
            }
            let c = c.clone();
            self.pending.pop_front();
            self.control(c);
        }
        while let Some((_, None)) = self.pending.front() {
            if let Some((c, _)) = self.pending.pop_front() {
                self.control(c);
            }
        }
        true
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        connect: &Connect,
    ) -> End {
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(connect.keep_alive as u64 * 1500));
        let max = self.ctx.max_packet();
        let mut last_read = 0;
        loop {
            loop {
                match packet::read(buf, max) {
                    Ok(Some(p)) => {
                        add(&self.ctx.router.stats.messages_received, 1);
                        if let Err(end) = self.handle(p).await {
                            return end;
                        }
                        if self.overflow.is_cancelled() {
                            return End::Overflow;
                        }
                        if self.pending.len() >= MAX_PENDING && !self.settle_front().await {
                            return End::NotDurable;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Violation(e),
                }
            }
            size_read_buffer(buf, last_read);
            let read = async {
                match keep_alive {
                    Some(ka) => tokio::time::timeout(ka, rd.read_buf(buf)).await.ok(),
                    None => Some(rd.read_buf(buf).await),
                }
            };
            let kick = self.kick.clone();
            let overflow = self.overflow.clone();
            let shutdown = self.ctx.shutdown.clone();
            tokio::select! {
                biased;
                _ = kick.cancelled() => return End::TakenOver,
                _ = overflow.cancelled() => return End::Overflow,
                _ = shutdown.cancelled() => return End::Shutdown,
                ok = self.settle_front(), if !self.pending.is_empty() => if !ok {
                    return End::NotDurable;
                },
                r = read => match r {
                    None => return End::KeepAlive, // MQTT-3.1.2-24
                    Some(Ok(0)) => return End::Closed,
                    Some(Ok(n)) => {
                        last_read = n;
                        add(&self.ctx.router.stats.bytes_received, n as u64);
                    }
                    Some(Err(e)) => return End::Io(e),
                },
            }
        }
    }
}
