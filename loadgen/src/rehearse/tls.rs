//! STARTTLS in a rehearsal (`rehearse --tls`, or a scenario whose client groups say
//! `starttls = true`): a throwaway certificate authority and a certificate for the loopback
//! addresses signed by it, made for this run and written into the run folder; the `[smtp]`
//! section that makes the spawned barrage serve it; and the driver's client side, which trusts
//! that authority and nothing else.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::driver::smtp::tls::{ClientTls, Trust};

/// Where the certificates go inside the run folder.
pub const TLS_DIR: &str = "tls";

/// The spawned barrage's `smtp.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RehearsalTls {
    /// STARTTLS offered; plain-text clients are served too.
    May,
    /// STARTTLS required before MAIL (530 otherwise).
    Required,
}

impl RehearsalTls {
    /// The word barrage's config takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RehearsalTls::May => "may",
            RehearsalTls::Required => "required",
        }
    }
}

/// The files of a throwaway certificate: the authority (what clients trust), the buffer's
/// certificate and its private key (mode 0600).
#[derive(Debug, Clone)]
pub struct ThrowawayCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a certificate authority and a certificate for 127.0.0.1, ::1 and localhost signed by it,
/// and writes them as PEM into `dir` (created): `ca.pem`, `cert.pem`, `key.pem`.
pub fn throwaway_certificate(dir: &Path) -> anyhow::Result<ThrowawayCertificate> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "landrush rehearsal CA (throwaway)");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let names = ["127.0.0.1", "::1", "localhost"].map(String::from).to_vec();
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "barrage.rehearsal.localhost");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let files = ThrowawayCertificate {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    write(&files.ca, &ca.pem(), 0o644)?;
    // The chain a server sends: its own certificate, then the authority's.
    write(&files.cert, &(cert.pem() + &ca.pem()), 0o644)?;
    write(&files.key, &key.serialize_pem(), 0o600)?;
    Ok(files)
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The `[smtp]` section of the spawned barrage's config: STARTTLS in `mode` over `cert`.
pub fn smtp_section(mode: RehearsalTls, cert: &ThrowawayCertificate) -> String {
    let mut smtp = toml::Table::new();
    smtp.insert("tls".into(), mode.as_str().into());
    smtp.insert("tls_cert".into(), cert.cert.display().to_string().into());
    smtp.insert("tls_key".into(), cert.key.display().to_string().into());
    let mut config = toml::Table::new();
    config.insert("smtp".into(), toml::Value::Table(smtp));
    toml::to_string(&config).expect("a TOML table serializes")
}

/// The driver's STARTTLS client for a buffer at `host` serving `cert`: it trusts the throwaway
/// authority only.
pub fn client(cert: &ThrowawayCertificate, host: &str) -> anyhow::Result<Arc<ClientTls>> {
    Ok(Arc::new(ClientTls::new(Trust::CaFile(&cert.ca), host)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_signed_by_the_authority_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = throwaway_certificate(&dir.path().join(TLS_DIR)).unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key.pem mode {mode:o}");
        let chain = std::fs::read_to_string(&files.cert).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
        let section = smtp_section(RehearsalTls::Required, &files);
        let parsed: toml::Table = toml::from_str(&section).unwrap();
        assert_eq!(parsed["smtp"]["tls"].as_str(), Some("required"));
        // A second run into the same folder gets a fresh authority.
        let first = std::fs::read_to_string(&files.ca).unwrap();
        let again = throwaway_certificate(&dir.path().join(TLS_DIR)).unwrap();
        assert_ne!(std::fs::read_to_string(&again.ca).unwrap(), first);
    }
}
