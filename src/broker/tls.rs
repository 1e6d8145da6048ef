//! TLS for `broker.tls`: loads the certificate chain and key (PEM) into a
//! rustls acceptor; with `require_certificate`, clients must present a
//! certificate that `cafile` signs (mosquitto's names). Must not touch
//! sockets.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

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
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    let builder = match (&tls.cafile, tls.require_certificate) {
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut open(ca)?) {
                roots
                    .add(cert.map_err(|e| tls_error(ca, e))?)
                    .map_err(|e| tls_error(ca, e))?;
            }
            if roots.is_empty() {
                return Err(tls_error(ca, "no certificate in the file"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&tls.cert_file, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
