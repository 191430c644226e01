//! TLS for the endpoint: the server certificate, and the negotiation before startup (a client's
//! `SSLRequest` is answered `S` and the connection upgraded when a certificate is configured,
//! `N` otherwise; a `GSSENCRequest` always `N`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, SslNegotiationMetaMessage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::ConnError;

/// A client that opened TLS must finish the handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading {path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS certificate and key: {0}")]
    Rustls(rustls::Error),
}

/// The endpoint's TLS: its certificate chain and key, and whether plaintext sessions are refused.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    required: bool,
}

impl ServerTls {
    /// From PEM files: `cert` holds the server's certificate then any intermediates; `key` its
    /// private key (PKCS#8, PKCS#1 or SEC1). rustls with ring, as the rest of viewcast.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsConfigError> {
        let pem_error = |path: &Path, reason: String| TlsConfigError::Pem { path: path.display().to_string(), reason };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| pem_error(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e.to_string()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
                .map_err(TlsConfigError::Rustls)?;
        // As PostgreSQL 17: clients that offer ALPN must offer this one.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(ServerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), required: false })
    }

    /// Refuse sessions that did not negotiate TLS (cancel requests are still accepted).
    pub fn required(mut self, required: bool) -> ServerTls {
        self.required = required;
        self
    }

    pub(crate) fn is_required(&self) -> bool {
        self.required
    }
}

/// A client connection after negotiation: both directions (plain or TLS) and what the client sent
/// after it (the start of its startup message).
pub(crate) struct Transport {
    pub reader: Box<dyn AsyncRead + Send + Sync + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    pub inbuf: BytesMut,
    pub encrypted: bool,
}

/// Answers the client's encryption requests until it sends its startup (or cancel) message.
pub(crate) async fn negotiate(mut stream: TcpStream, tls: Option<&ServerTls>) -> Result<Transport, ConnError> {
    let _ = stream.set_nodelay(true);
    let mut inbuf = BytesMut::with_capacity(8192);
    let ctx = DecodeContext::default();
    loop {
        let message = loop {
            if let Some(m) = PgWireFrontendMessage::decode(&mut inbuf, &ctx)? {
                break m;
            }
            if stream.read_buf(&mut inbuf).await? == 0 {
                return Err(ConnError::Disconnected);
            }
        };
        let acceptor = match (message, tls) {
            (PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)), Some(tls)) => {
                &tls.acceptor
            }
            (PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)), None)
            | (PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_)), _) => {
                stream.write_all(b"N").await?;
                continue;
            }
            // The startup or cancel message, still in `inbuf`.
            _ => {
                let (reader, writer) = stream.into_split();
                return Ok(Transport { reader: Box::new(reader), writer: Box::new(writer), inbuf, encrypted: false });
            }
        };
        // Bytes sent before the handshake would be taken as sent over TLS (CVE-2021-23214).
        if !inbuf.is_empty() {
            return Err(ConnError::Refused("data after SSLRequest, before the TLS handshake".into()));
        }
        stream.write_all(b"S").await?;
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| ConnError::Refused(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")))??;
        let (reader, writer) = tokio::io::split(tls);
        return Ok(Transport { reader: Box::new(reader), writer: Box::new(writer), inbuf, encrypted: true });
    }
}
