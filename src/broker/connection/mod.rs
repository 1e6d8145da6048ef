//! One client connection: CONNECT (protocol, client id, login, will),
//! then the read loop with keep-alive, the packet handlers, and the end
//! (will, session detach). The write half runs beside it ([`writer`]).
//!
//! Phases, in the order of [`serve`]: awaiting CONNECT (only CONNECT is
//! valid, within [`CONNECT_TIMEOUT`], MQTT-3.1.0-1), refused (CONNACK 1-5,
//! then close) or connected ([`Conn`]: the read loop beside the writer),
//! then ended with an [`End`] that decides the will. A QoS 1/2 PUBLISH is acknowledged only when the intake (the
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
use super::message::Message;
use super::packet::{self, Connect, DecodeError, Packet, connack};
use super::router::{Durable, Router};
use super::session::{Cell, Control};
use super::stats::add;
use super::writer;

/// How long a new connection gets to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Acknowledgements waiting for a commit before the reader pauses.
const MAX_PENDING: usize = 4096;

/// What every connection shares.
pub struct Ctx {
    pub router: Arc<Router>,
    pub auth: Auth,
    pub max_payload: usize,
    /// Cancelled when the broker stops.
    pub shutdown: CancellationToken,
}

impl Ctx {
    /// The largest packet read: a payload of `max_payload` plus topic,
    /// packet id and lengths.
    fn max_packet(&self) -> usize {
        self.max_payload + 65_535 + 4
    }
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// DISCONNECT: no will (MQTT-3.14.4-3).
    Disconnect,
    Closed,
    KeepAlive,
    TakenOver,
    /// The broker is stopping: no will (the client did nothing wrong).
    Shutdown,
    /// A commit the acknowledgement waited for failed: the message is not
    /// acknowledged, the client sends it again after reconnecting.
    NotDurable,
    Violation(DecodeError),
    Io(std::io::Error),
}

/// Serves one client until it leaves. `full`: the broker is at
/// `max_connections`, so the CONNECT is answered with CONNACK 3.
///
/// `slot` (the connection's place under `max_connections`) is given back
/// before the socket closes, so a client that saw the close finds it free.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    full: bool,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let stats = &ctx.router.stats;
    let first = tokio::time::timeout(
        CONNECT_TIMEOUT,
        next_packet(&mut rd, &mut buf, ctx.max_packet(), &ctx.router),
    )
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Err(End::Violation(DecodeError::Refuse(code)))) => {
            return refuse(&mut wr, peer, code, &ctx).await;
        }
        Ok(r) => {
            add(&stats.protocol_errors, 1);
            debug!(%peer, outcome = ?r.map(|_| ()), "first packet is not a valid CONNECT; closing");
            return;
        }
        Err(_) => {
            debug!(%peer, "no CONNECT in time; closing");
            return;
        }
    };
    if full {
        return refuse(&mut wr, peer, connack::UNAVAILABLE, &ctx).await;
    }
    let user = match ctx
        .auth
        .login(connect.username.as_deref(), connect.password.as_deref())
    {
        Login::Accepted { user } => user,
        Login::BadCredentials => {
            return refuse(&mut wr, peer, connack::BAD_CREDENTIALS, &ctx).await;
        }
        Login::NotAuthorized => return refuse(&mut wr, peer, connack::NOT_AUTHORIZED, &ctx).await,
    };
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        format!("auto-{:016x}", rand::random::<u64>()).into()
    } else {
        connect.client_id.as_str().into()
    };
    if let (Some(acl), Some(w)) = (&ctx.router.acl, &connect.will)
        && !acl.can_write(user.as_deref(), &client_id, &w.topic)
    {
        return refuse(&mut wr, peer, connack::NOT_AUTHORIZED, &ctx).await;
    }
    let kick = CancellationToken::new();
    let (cell, present, generation) = ctx.router.connect(
        client_id.clone(),
        connect.clean_session,
        user.clone(),
        kick.clone(),
    );
    super::clients::attached(&cell, peer, connect.protocol);
    let mut ack = BytesMut::with_capacity(4);
    packet::write_connack(&mut ack, present, connack::ACCEPTED);
    if wr.write_all(&ack).await.is_err() {
        ctx.router.disconnect(&cell, generation);
        return;
    }
    add(&stats.messages_sent, 1);
    info!(%peer, client_id = %client_id, clean = connect.clean_session, session_present = present, "client connected");
    let mut conn = Conn {
        ctx: ctx.clone(),
        cell: cell.clone(),
        user,
        pending: VecDeque::new(),
        kick,
    };
    let end = tokio::select! {
        end = conn.read_loop(&mut rd, &mut buf, &connect) => end,
        r = writer::run(wr, cell.clone(), ctx.router.clone(), generation) => match r {
            Ok(()) => End::TakenOver,
            Err(e) => End::Io(e),
        },
    };
    match &end {
        End::Violation(e) => {
            add(&stats.protocol_errors, 1);
            info!(%peer, client_id = %client_id, error = %e, "protocol violation; connection closed");
        }
        End::Io(e) => info!(%peer, client_id = %client_id, error = %e, "connection lost"),
        other => info!(%peer, client_id = %client_id, reason = ?other, "client disconnected"),
    }
    ctx.router.disconnect(&cell, generation);
    if !matches!(end, End::Disconnect | End::Shutdown)
        && let Some(w) = connect.will
    {
        // MQTT-3.1.2-8: abrupt close, keep-alive expiry, protocol error, takeover
        let msg = Message::new(w.topic.into(), w.payload, w.qos, w.retain);
        ctx.router.publish(msg).await;
    }
    drop(slot);
    drop(rd);
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
        cell.lock().push_control(c);
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
        loop {
            loop {
                match packet::read(buf, max) {
                    Ok(Some(p)) => {
                        add(&self.ctx.router.stats.messages_received, 1);
                        if let Err(end) = self.handle(p).await {
                            return end;
                        }
                        if self.pending.len() >= MAX_PENDING && !self.settle_front().await {
                            return End::NotDurable;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return End::Violation(e),
                }
            }
            let read = async {
                match keep_alive {
                    Some(ka) => tokio::time::timeout(ka, rd.read_buf(buf)).await.ok(),
                    None => Some(rd.read_buf(buf).await),
                }
            };
            let kick = self.kick.clone();
            let shutdown = self.ctx.shutdown.clone();
            tokio::select! {
                biased;
                _ = kick.cancelled() => return End::TakenOver,
                _ = shutdown.cancelled() => return End::Shutdown,
                ok = self.settle_front(), if !self.pending.is_empty() => if !ok {
                    return End::NotDurable;
                },
                r = read => match r {
                    None => return End::KeepAlive, // MQTT-3.1.2-24
                    Some(Ok(0)) => return End::Closed,
                    Some(Ok(n)) => add(&self.ctx.router.stats.bytes_received, n as u64),
                    Some(Err(e)) => return End::Io(e),
                },
            }
        }
    }
}
