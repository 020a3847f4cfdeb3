//! Throwaway certificates for the TLS tests, written as PEM files: self-signed ones for
//! 127.0.0.1 and localhost, and a private certificate authority that signs them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// The names every test certificate carries.
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate and its key as written: `cert.pem` / `key.pem` in a dir.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate itself, for a client that trusts exactly it.
    pub der: CertificateDer<'static>,
}

/// A fresh self-signed certificate for 127.0.0.1 and localhost, written into `dir` (replacing
/// the files of an earlier one).
pub fn self_signed(dir: &Path) -> TestCert {
    let names = NAMES.map(String::from).to_vec();
    let generated = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    write(
        dir,
        &generated.cert.pem(),
        &generated.signing_key.serialize_pem(),
    );
    TestCert {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        der: generated.cert.der().clone(),
    }
}

/// A private certificate authority, its certificate written as `ca.pem`.
pub struct PrivateCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: PathBuf,
}

impl PrivateCa {
    /// A new authority, written into `dir`.
    pub fn new(dir: &Path) -> PrivateCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "barrage test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, issuer.pem()).unwrap();
        PrivateCa { issuer, pem }
    }

    /// A certificate for 127.0.0.1 and localhost signed by this authority, written into `dir`.
    pub fn issue(&self, dir: &Path) -> TestCert {
        let params = CertificateParams::new(NAMES.map(String::from).to_vec()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write(dir, &cert.pem(), &key.serialize_pem());
        TestCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            der: cert.der().clone(),
        }
    }
}

fn write(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}
