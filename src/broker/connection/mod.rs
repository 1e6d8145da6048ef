//! One client connection, at MQTT 3.1, 3.1.1 or 5.0 with one code path:
//! CONNECT (protocol, client id, login, will), then the read loop with
//! keep-alive, the packet handlers, and the end (will, session detach, a
//! DISCONNECT with its reason code to a 5.0 client). The write half runs
//! beside it ([`writer`]).
//!
//! Phases, in the order of [`serve`]: awaiting CONNECT (`connect.rs`:
//! only CONNECT is valid, within `broker.connect_timeout` of the accept,
//! MQTT-3.1.0-1; the socket holds a [`PendingSlot`] until then), a
//! connection slot (`max_connections`), the login (hashed off the
//! runtime's threads; an address past `login_failures` is refused),
//! refused (CONNACK, then close) or connected ([`Conn`], `read_loop.rs`:
//! the read loop beside the writer), then ended with an [`End`] that
//! decides the will. A client that owes more than `max_client_buffer`
//! unsent (it does not read its socket) is disconnected. A QoS 1/2
//! PUBLISH is acknowledged only when the intake (the bridge's outbox) and
//! the store hold it; acknowledgements leave in the order the PUBLISHes
//! came (MQTT-4.6.0-2/3). A protocol violation closes this connection
//! only. Must not touch other connections' sockets.

mod connect;
mod handlers;
mod publish;
mod read_loop;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::auth::{Auth, Login};
use super::limits::{Limit, Limits};
use super::listener::PendingSlot;
use super::packet::v5::{Connect, Will};
use super::packet::{DecodeError, Protocol, encode5, reason};
use super::router::{Durable, Router};
use super::session::{Cell, Control};
use super::stats::add;
use super::writer;
use connect::{Refusal, attach_of, keep_alive, login, read_connect, refuse, write_accepted};

/// What a connection's read buffer starts at (it grows for large packets
/// and shrinks back once they are read).
const READ_BUFFER: usize = 256;

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
    /// packet id, properties and lengths.
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
    /// MQTT 5 DISCONNECT with reason 0x04: the will is published.
    DisconnectWithWill,
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
    /// A rule of the connection broken (MQTT 5 reason code, what).
    Refused(u8, &'static str),
    Io(std::io::Error),
}

impl End {
    /// The reason code of the DISCONNECT a 5.0 client gets before the
    /// close, where the standard has one (MQTT-4.13.1-1).
    fn disconnect_reason(&self) -> Option<u8> {
        match self {
            End::Violation(e) => Some(e.reason_code()),
            End::Refused(code, _) => Some(*code),
            End::KeepAlive => Some(reason::KEEP_ALIVE_TIMEOUT),
            End::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            End::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            End::NotDurable => Some(reason::UNSPECIFIED_ERROR),
            // it does not read: a DISCONNECT would never arrive
            End::Overflow => None,
            End::Disconnect | End::DisconnectWithWill | End::Closed | End::Io(_) => None,
        }
    }

    /// Whether the will is published (MQTT-3.1.2-8, MQTT-3.14.4-3).
    fn publishes_will(&self) -> bool {
        !matches!(self, End::Disconnect | End::Shutdown)
    }
}

/// Serves one client until it leaves: admitted at CONNECT, then connected
/// until an [`End`], then ended. `pending` is the socket's place among
/// those without CONNECT yet; `deadline` ends the wait for it.
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
    // boxed, like the steps after the connected part: a task is sized for
    // its largest state, and an idle connection should hold only the read
    // and write loops (the CONNECT itself is gone by then)
    let admitted = Box::pin(admit(
        &mut rd, &mut wr, &mut buf, peer, &ctx, pending, deadline,
    ));
    let Some(a) = admitted.await else {
        return;
    };
    let end = connected(&mut rd, &mut wr, &mut buf, &ctx, &a).await;
    log_end(&ctx, peer, &a.client_id, &end);
    if a.protocol == Protocol::V5
        && let Some(code) = end.disconnect_reason()
    {
        send_disconnect(&mut wr, code).await;
    }
    leave(&ctx, a, &end).await;
    drop(rd);
}

/// The connected part: the read loop beside the writer until either ends
/// (the writer ends when the session is taken over or the socket fails).
async fn connected<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut BytesMut,
    ctx: &Arc<Ctx>,
    a: &Admitted,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut conn = Conn {
        ctx: ctx.clone(),
        cell: a.cell.clone(),
        user: a.user.clone(),
        protocol: a.protocol,
        pending: VecDeque::new(),
        kick: a.kick.clone(),
        overflow: CancellationToken::new(),
        aliases: HashMap::new(),
        unacked: 0,
    };
    // the two loops boxed too: the task itself then holds a few hundred
    // bytes, and each loop only what it needs (PUBLISH and SUBSCRIBE
    // handling are boxed per packet)
    let reading = Box::pin(conn.read_loop(rd, buf, a.keep_alive));
    let writing = Box::pin(writer::run(
        wr,
        a.cell.clone(),
        ctx.router.clone(),
        a.generation,
    ));
    tokio::select! {
        end = reading => end,
        r = writing => match r {
            Ok(()) => End::TakenOver,
            Err(e) => End::Io(e),
        },
    }
}

/// The DISCONNECT with its reason code a 5.0 client gets before the close
/// (MQTT-4.13.1-1), given 200 ms to leave.
async fn send_disconnect<W: AsyncWrite + Unpin>(wr: &mut W, code: u8) {
    let mut b = BytesMut::new();
    encode5::write_disconnect(&mut b, code, None);
    let _ = tokio::time::timeout(Duration::from_millis(200), wr.write_all(&b)).await;
}

/// After the end: the session detached, the shared-subscription messages
/// it held handed to other members, the will when `end` publishes it, and
/// the connection slot given back (before the socket closes).
async fn leave(ctx: &Arc<Ctx>, a: Admitted, end: &End) {
    let orphans = ctx.router.disconnect(&a.cell, a.generation);
    ctx.router.redeliver_shared(orphans).await;
    if end.publishes_will()
        && let Some(w) = a.will
    {
        Box::pin(publish_will(ctx, &a.cell, *w)).await;
    }
    drop(a.slot);
}

/// A connection past its CONNECT: what the connected part keeps of it.
struct Admitted {
    cell: Arc<Cell>,
    generation: u64,
    client_id: Arc<str>,
    user: Option<Arc<str>>,
    protocol: Protocol,
    keep_alive: u16,
    will: Option<Box<Will>>,
    kick: CancellationToken,
    /// The connection's place under `max_connections`, given back before
    /// the socket closes.
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// The CONNECT, a slot, the login, the session and the CONNACK; `None`
/// when the connection ends there (refused or closed).
async fn admit<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut BytesMut,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    pending: PendingSlot,
    deadline: tokio::time::Instant,
) -> Option<Admitted>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connect = read_connect(rd, wr, buf, peer, ctx, pending, deadline).await?;
    if connect.properties.authentication_method.is_some() {
        // no enhanced authentication
        refuse(wr, peer, Refusal::BadAuthMethod, &connect, ctx).await;
        return None;
    }
    // a slot is taken at CONNECT, and given back before the socket closes
    let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
        refuse(wr, peer, Refusal::Unavailable, &connect, ctx).await;
        return None;
    };
    let who = match identify(ctx, peer, &connect).await {
        Ok(who) => who,
        Err(why) => {
            refuse(wr, peer, why, &connect, ctx).await;
            return None;
        }
    };
    attach(wr, peer, ctx, connect, who, slot).await
}

/// Who a CONNECT is: the user its login gave and its client id.
struct Identity {
    user: Option<Arc<str>>,
    client_id: Arc<str>,
    /// The broker chose the client id (the CONNECT's was empty).
    assigned: bool,
}

/// The login (a failure past `login_failures` counted), the client id
/// (`auto-...` for an empty one) and the will's topic against the ACL.
async fn identify(
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
    connect: &Connect,
) -> Result<Identity, Refusal> {
    let user = match login(ctx, peer, connect).await {
        Login::Accepted { user } => user,
        Login::BadCredentials => return Err(Refusal::BadCredentials),
        Login::NotAuthorized => return Err(Refusal::NotAuthorized),
        Login::Throttled => {
            let limits = &ctx.router.stats.limits;
            limits.hit(Limit::LoginFailures, &peer.ip());
            return Err(Refusal::NotAuthorized);
        }
    };
    let assigned = connect.client_id.is_empty();
    let client_id: Arc<str> = match assigned {
        true => format!("auto-{:016x}", rand::random::<u64>()).into(),
        false => connect.client_id.as_str().into(),
    };
    if let (Some(acl), Some(w)) = (&ctx.router.acl, &connect.will)
        && !acl.can_write(user.as_deref(), &client_id, &w.topic)
    {
        return Err(Refusal::NotAuthorized);
    }
    Ok(Identity {
        user,
        client_id,
        assigned,
    })
}

/// The session (`max_sessions`: refused with Quota) and the CONNACK;
/// `None` when refused or the CONNACK cannot be written.
async fn attach<W: AsyncWrite + Unpin>(
    wr: &mut W,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    connect: Connect,
    who: Identity,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Option<Admitted> {
    let Identity {
        user,
        client_id,
        assigned,
    } = who;
    let kick = CancellationToken::new();
    let attach = attach_of(ctx, &connect, client_id.clone(), user.clone(), kick.clone());
    let Some((cell, present, generation)) = ctx.router.connect(attach) else {
        refuse(wr, peer, Refusal::Quota, &connect, ctx).await;
        return None;
    };
    super::clients::attached(&cell, peer, connect.protocol);
    let mut ack = BytesMut::new();
    write_accepted(
        &mut ack,
        ctx,
        &connect,
        present,
        assigned.then_some(&*client_id),
    );
    if wr.write_all(&ack).await.is_err() {
        // a CONNACK that could not be written: nothing was delivered yet
        let _ = ctx.router.disconnect(&cell, generation);
        return None;
    }
    add(&ctx.router.stats.messages_sent, 1);
    info!(%peer, client_id = %client_id, clean = connect.clean_start, session_present = present,
        protocol = ?connect.protocol, bridge = connect.bridge, "client connected");
    Some(Admitted {
        cell,
        generation,
        client_id,
        user,
        protocol: connect.protocol,
        keep_alive: keep_alive(ctx, &connect),
        will: connect.will.map(Box::new),
        kick,
        slot,
    })
}

/// The will (MQTT-3.1.2-8): at once, or after its Will Delay Interval
/// (capped by the session's expiry) unless the client is back by then
/// (MQTT-3.1.3-9).
async fn publish_will(ctx: &Arc<Ctx>, cell: &Arc<Cell>, w: Will) {
    let msg = publish::will_message(w.topic.into(), w.payload, w.qos, w.retain, &w.properties);
    let delay = w.properties.will_delay_interval.unwrap_or(0);
    if delay == 0 {
        ctx.router.publish(msg).await;
        return;
    }
    let wait = Duration::from_secs(u64::from(delay)).min(cell.lock().expiry);
    let (router, cell) = (ctx.router.clone(), cell.clone());
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if cell.lock().attached.is_none() {
            router.publish(msg).await;
        }
    });
}

fn log_end(ctx: &Ctx, peer: SocketAddr, client_id: &str, end: &End) {
    match end {
        End::Violation(e) => {
            add(&ctx.router.stats.protocol_errors, 1);
            info!(%peer, client_id, error = %e, "protocol violation; connection closed");
        }
        End::Refused(code, what) => {
            add(&ctx.router.stats.protocol_errors, 1);
            info!(%peer, client_id, reason_code = code, what, "connection closed");
        }
        End::Io(e) => info!(%peer, client_id, error = %e, "connection lost"),
        End::Overflow => {
            ctx.router.stats.limits.hit(Limit::ClientBuffer, &client_id);
        }
        other => info!(%peer, client_id, reason = ?other, "client disconnected"),
    }
}

/// A connected client's read side.
struct Conn {
    ctx: Arc<Ctx>,
    cell: Arc<Cell>,
    user: Option<Arc<str>>,
    protocol: Protocol,
    /// Acknowledgements in packet order, each behind its commit.
    pending: VecDeque<(Control, Option<Durable>)>,
    kick: CancellationToken,
    /// Cancelled when the client owes more than `max_client_buffer`.
    overflow: CancellationToken,
    /// MQTT 5 Topic Aliases the client set (MQTT-3.3.2-10..12).
    aliases: HashMap<u16, Arc<str>>,
    /// QoS 1/2 PUBLISHes of the client not acknowledged yet (for its
    /// Receive Maximum, MQTT-3.3.4-7): QoS 1 until its PUBACK leaves, QoS
    /// 2 until PUBREL.
    unacked: usize,
}

impl Conn {
    fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn v5(&self) -> bool {
        self.protocol == Protocol::V5
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
            self.send_ack(c);
        } else {
            self.pending.push_back((c, durable));
        }
    }

    /// An acknowledgement leaves: a PUBACK ends its message's count
    /// against the Receive Maximum.
    fn send_ack(&mut self, c: Control) {
        if matches!(c, Control::Ack(0x40, _) | Control::AckCode(0x40, _, _)) {
            self.unacked = self.unacked.saturating_sub(1);
        }
        self.control(c);
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
            self.send_ack(c);
        }
        while let Some((_, None)) = self.pending.front() {
            if let Some((c, _)) = self.pending.pop_front() {
                self.send_ack(c);
            }
        }
        true
    }
}
