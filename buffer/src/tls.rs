//! TLS for the intakes: the certificate chain and key read from PEM files into a rustls server
//! config (ring, the provider the ack sender uses too), kept swappable so a SIGHUP serves a new
//! certificate to the next session without touching the sessions already running.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// `smtp.tls`: whether the SMTP intake offers STARTTLS, and whether it insists on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// No STARTTLS (the command gets 502).
    #[default]
    Off,
    /// STARTTLS offered; plain-text requests are accepted too (Postfix's `may`).
    May,
    /// STARTTLS offered and required before MAIL (530 otherwise).
    Required,
}

/// The certificate files of one listener, and the server config last loaded from them.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the chain and key; an error names the file and what to fix.
    pub fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<Arc<Self>> {
        let config = server_config(cert, key, alpn)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(config),
        }))
    }

    /// Reads the files again and serves them to every handshake from now on. On an error the
    /// certificate in use stays, so a half-copied file never takes TLS down.
    pub fn reload(&self) -> anyhow::Result<()> {
        let alpn = self.current().alpn_protocols.clone();
        let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
        let config = server_config(&self.cert, &self.key, &alpn)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An acceptor over the certificate in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }
}

fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate chain {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate: give the PEM chain, server certificate first",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a PEM private key from {} (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a TLS session negotiated, as recorded with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

impl TlsInfo {
    pub fn of(connection: &rustls::ServerConnection) -> Self {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_string(),
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .map_or("unknown".to_string(), |suite| {
                format!("{:?}", suite.suite())
            });
        TlsInfo { version, cipher }
    }
}
