//! TLS for `broker.tls`: loads the certificate chain and key (PEM) into a
//! rustls acceptor. Must not touch sockets.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use super::{BrokerError, BrokerTls};

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads the certificate chain and key (PEM) into an acceptor.
pub fn acceptor(tls: &BrokerTls) -> Result<TlsAcceptor, BrokerError> {
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| tls_error(p, e))
    };
    let certs = rustls_pemfile::certs(&mut open(&tls.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    if certs.is_empty() {
        return Err(tls_error(&tls.cert_file, "no certificate in the file"));
    }
    let key = rustls_pemfile::private_key(&mut open(&tls.key_file)?)
        .map_err(|e| tls_error(&tls.key_file, e))?
        .ok_or_else(|| tls_error(&tls.key_file, "no private key in the file"))?;
    // ring is the only provider built in (Cargo.toml): name it, so a second
    // one pulled in by a dependency cannot make the builder ambiguous
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&tls.cert_file, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
