//! The connected client's read loop: packets decoded at the connection's
//! level (3.1.1 byte for byte as before, 5.0 by the 5.0 decoder), each
//! handed to its handler, keep-alive (1.5 x, MQTT-3.1.2-24), the
//! acknowledgements released in order as their commits finish, the read
//! buffer sized to what the client sends. Must not write to the socket.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Conn, End, READ_BUFFER};
use crate::broker::packet::v5;
use crate::broker::stats::add;

/// Acknowledgements waiting for a commit before the reader pauses.
const MAX_PENDING: usize = 4096;
/// The read buffer of a connection that sends a lot.
const READ_BURST: usize = 16 * 1024;

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

impl Conn {
    pub(super) async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        ka: u16,
    ) -> End {
        let keep_alive = (ka > 0).then(|| Duration::from_millis(u64::from(ka) * 1500));
        let max = self.ctx.max_packet();
        let mut last_read = 0;
        loop {
            loop {
                match v5::read(buf, max, self.protocol) {
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
