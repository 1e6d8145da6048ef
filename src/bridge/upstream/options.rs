//! The upstream client's options from `uplink:` (TLS through rustls,
//! credentials, keep-alive, last will) and the reconnect backoff.
//!
//! Owns nothing at run time. Must not touch the connection or the outbox.

use std::time::Duration;

use rand::Rng;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::bridge::config::{Endpoint, UplinkConfig};
use crate::config::ReconnectConfig;

/// The system CA bundle, used when `ca_file` is not given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the upstream client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("uplink.url: {0}")]
    Url(String),
    #[error("uplink: cannot read {key} {path}: {source}")]
    File {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("uplink password: {0}")]
    Password(String),
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|source| UpstreamError::File {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// rumqttc options from the config; the last will is `offline`, retained,
/// on the upstream status topic.
pub fn options(cfg: &UplinkConfig, gateway: &str) -> Result<MqttOptions, UpstreamError> {
    let ep = Endpoint::parse(&cfg.url).map_err(UpstreamError::Url)?;
    let mut o = MqttOptions::new(cfg.client_id(gateway), ep.host, ep.port);
    o.set_keep_alive(cfg.keep_alive.get());
    o.set_clean_session(true);
    o.set_inflight(cfg.inflight);
    let max = cfg.max_packet_size.as_usize();
    o.set_max_packet_size(max, max);
    o.set_pending_throttle(Duration::ZERO);
    // commands are acknowledged once handed on locally (forward/report.rs)
    o.set_manual_acks(true);
    o.set_last_will(LastWill::new(
        cfg.status_topic(gateway),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        let password = match cfg.password_source().map_err(UpstreamError::Password)? {
            Some(s) => s
                .resolve()
                .map_err(UpstreamError::Password)?
                .expose()
                .to_string(),
            None => String::new(),
        };
        o.set_credentials(user, password);
    }
    if ep.tls {
        let ca = match &cfg.ca_file {
            Some(p) => read("ca_file", p)?,
            None => read(
                "ca_file (system bundle)",
                std::path::Path::new(SYSTEM_CA_BUNDLE),
            )?,
        };
        let client_auth = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => Some((read("cert_file", c)?, read("key_file", k)?)),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// The delay before reconnect attempt `attempt` (0-based): `min * 2^attempt`
/// capped at `max`, then a random factor in [0.5, 1.0] (jitter, so a fleet
/// of gateways does not reconnect in step).
pub fn backoff(cfg: &ReconnectConfig, attempt: u32) -> Duration {
    let base = cfg
        .min
        .get()
        .saturating_mul(1u32 << attempt.min(20))
        .min(cfg.max.get());
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimeSpan as D;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = ReconnectConfig {
            min: D::from_millis(100),
            max: D::from_secs(2),
        };
        for attempt in 0..40 {
            let d = backoff(&cfg, attempt);
            let base = (100u64 << attempt.min(20)).min(2000);
            assert!(d.as_millis() as u64 >= base / 2 && d.as_millis() as u64 <= base);
        }
    }
}
