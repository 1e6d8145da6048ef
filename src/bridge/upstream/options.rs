//! The upstream client's options from `uplink:` (TLS through rustls,
//! credentials, keep-alive, last will, the protocol version and, at
//! MQTT 5, the CONNECT properties: session expiry, our maximum packet
//! size).
//!
//! Owns nothing at run time. Must not touch the connection or the outbox.

use std::io::{BufReader, Cursor};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Connect, ConnectProperties, LastWill, Login, Packet};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::wire::Protocol;
use crate::bridge::config::{Endpoint, UplinkConfig};

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
    #[error("uplink {key}: {reason}")]
    Tls { key: &'static str, reason: String },
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|source| UpstreamError::File {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// How to reach the upstream broker and what to say in CONNECT.
#[derive(Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    /// For `mqtts://`: the connector and the name the certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The CONNECT packet (its clean flag is set per connection).
    pub connect: Connect,
    pub will: LastWill,
    pub login: Option<Login>,
    pub protocol: Protocol,
    /// MQTT 5 Session Expiry Interval of a lasting session, in seconds.
    pub session_expiry: u32,
    /// Largest packet read or written (`uplink.max_packet_size`).
    pub max_packet: usize,
    /// Bounds each connect (TCP, TLS, CONNACK) and each write.
    pub io_timeout: Duration,
}

impl Options {
    /// The keep-alive interval; `None` when 0 (no pings).
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.connect.keep_alive > 0).then(|| Duration::from_secs(self.connect.keep_alive.into()))
    }

    /// The CONNECT of one connection: `clean` starts a new session (and,
    /// at MQTT 5, one that ends with the connection: a wipe).
    pub fn connect_packet(&self, clean: bool) -> Packet {
        let mut connect = self.connect.clone();
        connect.clean_start = clean;
        if self.protocol == Protocol::V5 {
            let mut props = ConnectProperties::new();
            props.session_expiry_interval = Some(if clean { 0 } else { self.session_expiry });
            props.max_packet_size = Some(self.max_packet.min(u32::MAX as usize) as u32);
            connect.properties = Some(props);
        }
        Packet::Connect(connect, Some(self.will.clone()), self.login.clone())
    }
}

/// The options from the config; the last will is `offline`, retained,
/// on the upstream status topic.
pub fn options(cfg: &UplinkConfig, gateway: &str) -> Result<Options, UpstreamError> {
    let ep = Endpoint::parse(&cfg.url).map_err(UpstreamError::Url)?;
    let connect = Connect {
        keep_alive: cfg.keep_alive.get().as_secs().min(u16::MAX.into()) as u16,
        client_id: cfg.client_id(gateway).to_string(),
        clean_start: false,
        properties: None,
    };
    let will = LastWill::new(
        cfg.status_topic(gateway),
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    );
    let mut login = None;
    if let Some(user) = &cfg.username {
        let password = match cfg.password_source().map_err(UpstreamError::Password)? {
            Some(s) => s
                .resolve()
                .map_err(UpstreamError::Password)?
                .expose()
                .to_string(),
            None => String::new(),
        };
        login = Some(Login::new(user.as_str(), password));
    }
    let tls = if ep.tls {
        let name = ServerName::try_from(ep.host.clone()).map_err(|e| UpstreamError::Tls {
            key: "url",
            reason: format!("{}: {e}", ep.host),
        })?;
        Some((TlsConnector::from(tls_client_config(cfg)?), name))
    } else {
        None
    };
    Ok(Options {
        host: ep.host,
        port: ep.port,
        tls,
        connect,
        will,
        login,
        protocol: cfg.protocol,
        session_expiry: cfg.session_expiry.get().as_secs().min(u32::MAX.into()) as u32,
        max_packet: cfg.max_packet_size.as_usize(),
        io_timeout: cfg.io_timeout.get(),
    })
}

/// The rustls client config of an `mqtts://` uplink: trusting `ca_file`
/// (else the system bundle), with `cert_file` and `key_file` as the client
/// certificate when both are given. The bridge's connections and the
/// Sparkplug node's own session use it.
pub fn tls_client_config(cfg: &UplinkConfig) -> Result<Arc<ClientConfig>, UpstreamError> {
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
    client_config(&ca, client_auth)
}

/// A rustls client config trusting the certificates of `ca` (PEM), with
/// the client certificate and key (PEM) when given.
fn client_config(
    ca: &[u8],
    client_auth: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<ClientConfig>, UpstreamError> {
    let tls = |key: &'static str| {
        move |e: &dyn std::fmt::Display| UpstreamError::Tls {
            key,
            reason: e.to_string(),
        }
    };
    let mut roots = RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut BufReader::new(Cursor::new(ca)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("ca_file")(&e))?;
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(tls("ca_file")(&"no certificate in the file"));
    }
    // ring is the only provider built in (Cargo.toml), named as in broker/tls.rs
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("url")(&e))?
        .with_root_certificates(roots);
    let config = match client_auth {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut BufReader::new(Cursor::new(cert)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls("cert_file")(&e))?;
            if certs.is_empty() {
                return Err(tls("cert_file")(&"no certificate in the file"));
            }
            let key = rustls_pemfile::private_key(&mut BufReader::new(Cursor::new(key)))
                .map_err(|e| tls("key_file")(&e))?
                .ok_or_else(|| tls("key_file")(&"no private key in the file"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls("key_file")(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
