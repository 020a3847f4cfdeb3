//! The driver's STARTTLS client side: which certificates it trusts (the web PKI, a CA file, or
//! none at all for a rehearsal against a throwaway self-signed certificate), and the stream a
//! connection reads and writes before and after the upgrade.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// A connection before STARTTLS (left) or after it (right).
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// How the driver's connections do STARTTLS.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    /// The name the certificate must carry (the target's host).
    pub server_name: ServerName<'static>,
}

/// Which certificates the driver accepts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The web PKI's roots (a production certificate).
    WebPki,
    /// The certificates in this PEM file (a private CA, or the self-signed certificate itself).
    CaFile(&'a Path),
    /// Any certificate at all: for rehearsals only, the connection is encrypted but not
    /// authenticated.
    Insecure,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client for `host` (a name or an IP address, as in `--target`).
    pub fn new(trust: Trust<'_>, host: &str) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider offers no safe protocol version")?;
        let config = match trust {
            Trust::WebPki => {
                let roots =
                    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::CaFile(path) => builder
                .with_root_certificates(roots_from(path)?)
                .with_no_client_auth(),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        let server_name = ServerName::try_from(host.to_string())
            .with_context(|| format!("`{host}` is not a name a TLS certificate can carry"))?;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

fn roots_from(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("{} is not a PEM file", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: a certificate rustls cannot use", path.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no certificate: give the PEM certificate (or CA) the buffer serves",
        path.display()
    );
    Ok(roots)
}

/// `--tls-insecure`: every certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
