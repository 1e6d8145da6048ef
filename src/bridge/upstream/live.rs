//! One turn of a live connection: the forwarder's requests written, then
//! the next packet from the broker handed on (or answered here), or the
//! keep-alive.
//!
//! Owns the packet-level protocol of the client side (which packet
//! answers which). Must not reconnect or back off: that is `mod.rs`.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, PingReq, PubAck, PubComp, PubRec, PubRel, Subscribe, SubscribeReasonCode,
};
use tokio::time::Instant;
use tracing::warn;

use super::conn::{Conn, ConnError};
use super::outgoing::PubRecIs;
use super::server::{puback_refusal, pubrec_refusal};
use super::wire::v5_qos;
use super::{Link, Ping, REQUESTS_PER_WRITE, Report, Request, SUBSCRIBE_PKIDS, disconnect};

/// What one turn of a live connection gave.
pub(super) enum Turn {
    Report(Report),
    Again,
    Closing,
}

impl Link {
    /// Writes what was asked for, then hands on the next packet read, or
    /// waits for one, a request or the keep-alive.
    pub(super) async fn turn(&mut self, conn: &mut Conn) -> Result<Turn, ConnError> {
        for _ in 0..REQUESTS_PER_WRITE {
            let Ok(r) = self.requests.try_recv() else {
                break;
            };
            if self.request(conn, r)? {
                return Ok(Turn::Closing);
            }
        }
        if conn.has_output() {
            conn.flush().await?;
            if let Ping::Idle { .. } = self.ping {
                self.ping = Ping::Idle {
                    since: Instant::now(),
                };
            }
        }
        if let Some(p) = conn.next_packet()? {
            return Ok(self.incoming(conn, p)?.map_or(Turn::Again, Turn::Report));
        }
        let keep_alive = self.opts.keep_alive();
        let ping_at = keep_alive.map(|k| match self.ping {
            Ping::Idle { since } | Ping::Waiting { since } => since + k,
        });
        tokio::select! {
            r = conn.fill() => r?,
            Some(r) = self.requests.recv() => {
                if self.request(conn, r)? {
                    return Ok(Turn::Closing);
                }
            }
            _ = sleep_until(ping_at) => match self.ping {
                Ping::Waiting { .. } => return Err(ConnError::NoPingResp),
                Ping::Idle { .. } => {
                    conn.queue(&Packet::PingReq(PingReq))?;
                    self.ping = Ping::Waiting { since: Instant::now() };
                }
            },
        }
        Ok(Turn::Again)
    }

    /// Queues one request on a live connection; `true` after DISCONNECT.
    fn request(&mut self, conn: &mut Conn, r: Request) -> Result<bool, ConnError> {
        let packet = match r {
            Request::Publish { publish, key } => {
                if let Err(e) = conn.queue_publish(&publish) {
                    // the forwarder checks sizes first: this is a bug, not a drop
                    warn!(error = %e, pkid = publish.pkid, "uplink: a message cannot be sent");
                } else if publish.qos != QoS::AtMostOnce {
                    // kept (not copied) for a resend on a resumed session
                    self.held.sent(publish, key);
                }
                return Ok(false);
            }
            Request::Release { pkid, key } => self.held.release(pkid, key),
            Request::Subscribe { filter, qos } => {
                let pkid = self.next_subscribe;
                self.next_subscribe = if pkid == *SUBSCRIBE_PKIDS.end() {
                    *SUBSCRIBE_PKIDS.start()
                } else {
                    pkid + 1
                };
                let mut s = Subscribe::new(Filter::new(filter, v5_qos(qos)), None);
                s.pkid = pkid;
                Packet::Subscribe(s)
            }
            Request::Ack { pkid, qos } => match qos {
                QoS::AtMostOnce => return Ok(false),
                QoS::AtLeastOnce => Packet::PubAck(PubAck::new(pkid, None)),
                QoS::ExactlyOnce => {
                    self.held.took(pkid);
                    Packet::PubRec(PubRec::new(pkid, None))
                }
            },
            Request::Disconnect => {
                conn.queue(&disconnect())?;
                return Ok(true);
            }
        };
        conn.queue(&packet)?;
        Ok(false)
    }

    /// One packet from the broker: a report for the forwarder, or an
    /// answer queued here.
    pub(super) fn incoming(
        &mut self,
        conn: &mut Conn,
        p: Packet,
    ) -> Result<Option<Report>, ConnError> {
        Ok(match p {
            Packet::Publish(p) if p.qos == QoS::ExactlyOnce && self.held.has_taken(p.pkid) => {
                // sent again before our PUBREC arrived: not a new command
                conn.queue(&Packet::PubRec(PubRec::new(p.pkid, None)))?;
                None
            }
            Packet::Publish(p) => Some(Report::Command(Box::new(p))),
            Packet::PubAck(a) => {
                self.held.done(a.pkid);
                let text = a
                    .properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_deref());
                Some(match puback_refusal(a.reason, text) {
                    Some(refusal) => Report::Refused {
                        pkid: a.pkid,
                        refusal,
                    },
                    None => Report::Acked(a.pkid),
                })
            }
            Packet::PubRec(r) => {
                let text = r
                    .properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_deref());
                match pubrec_refusal(r.reason, text) {
                    // the QoS 2 exchange ends here (MQTT-4.3.3): no PUBREL
                    Some(refusal) if self.held.done(r.pkid) => Some(Report::Refused {
                        pkid: r.pkid,
                        refusal,
                    }),
                    Some(_) => None,
                    None => self.pubrec(conn, r.pkid)?,
                }
            }
            Packet::PubComp(c) => {
                self.held.done(c.pkid);
                Some(Report::Completed(c.pkid))
            }
            Packet::PubRel(r) => {
                self.held.released_by_broker(r.pkid);
                conn.queue(&Packet::PubComp(PubComp::new(r.pkid, None)))?;
                None
            }
            Packet::SubAck(s) => {
                if let Some(code) = s
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    warn!(
                        pkid = s.pkid,
                        reason = ?code,
                        "uplink: the broker refused a command subscription"
                    );
                }
                None
            }
            Packet::PingResp(_) => {
                self.ping = Ping::Idle {
                    since: Instant::now(),
                };
                None
            }
            Packet::UnsubAck(_) => None,
            Packet::Disconnect(d) => {
                let text = d.properties.and_then(|p| p.reason_string);
                return Err(ConnError::Disconnected(format!(
                    "{:?}{}",
                    d.reason_code,
                    text.map(|t| format!(": {t}")).unwrap_or_default()
                )));
            }
            _ => return Err(ConnError::Protocol("a packet a broker must not send")),
        })
    }

    /// A PUBREC of success: news for the forwarder, or a PUBREL again.
    fn pubrec(&mut self, conn: &mut Conn, pkid: u16) -> Result<Option<Report>, ConnError> {
        Ok(match self.held.received(pkid) {
            PubRecIs::News => Some(Report::Received(pkid)),
            PubRecIs::Seen => None,
            PubRecIs::ReleaseAgain => {
                conn.queue(&Packet::PubRel(PubRel::new(pkid, None)))?;
                None
            }
        })
    }
}

/// Until `at`; for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
