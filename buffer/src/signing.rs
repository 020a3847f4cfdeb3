//! The buffer's signing key (contract: Provable order): an Ed25519 key pair made at first start
//! in the data dir (`signing-key.pk8`, PKCS#8, mode 0600) or taken from the file the config
//! names (`[signing] key_file`), and the signed checkpoints made with it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, ensure};
use contract::chain::{Checkpoint, fingerprint, hex};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "signing-key.pk8";

/// The key pair that signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
    /// The key `[signing] key_file` names when it names one, else the data dir's.
    pub fn from_config(key_file: Option<&Path>, data_dir: &Path) -> anyhow::Result<Signer> {
        match key_file {
            Some(file) => Signer::load_file(file),
            None => Signer::load_or_create(data_dir),
        }
    }

    /// Loads the key file the config names: an Ed25519 key in PKCS#8, DER or PEM (`PRIVATE KEY`),
    /// that only its owner may read. Never made: a configured key that is missing is an error,
    /// since a new key cannot sign for the checkpoints published with the old one.
    pub fn load_file(path: &Path) -> anyhow::Result<Signer> {
        let shown = path.display();
        let metadata = std::fs::metadata(path).with_context(|| {
            format!("cannot read signing.key_file {shown}: check the path in the config")
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        ensure!(
            mode & 0o077 == 0,
            "signing.key_file {shown} has mode {mode:03o}: group or others have access to it, \
             and whoever reads it can sign for the buffer. Run `chmod 600 {shown}` (and consider \
             the key exposed if others could read it)"
        );
        let bytes = std::fs::read(path).with_context(|| {
            format!("cannot read signing.key_file {shown}: it must be readable by barrage's user")
        })?;
        let der = match PrivatePkcs8KeyDer::from_pem_slice(&bytes) {
            Ok(pem) => pem.secret_pkcs8_der().to_vec(),
            Err(_) => bytes,
        };
        // Also PKCS#8 v1, without the public key (what `openssl genpkey` writes).
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            anyhow::anyhow!(
                "signing.key_file {shown} is not an Ed25519 private key in PKCS#8 ({e}): give a \
                 DER or PEM PKCS#8 key, e.g. a copy of a data dir's {KEY_FILE} or one made with \
                 `openssl genpkey -algorithm ed25519 -out FILE`"
            )
        })?;
        Ok(Signer { pair })
    }

    /// Loads `signing-key.pk8` from the data dir, or makes it (mode 0600) when there is none.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Signer> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path)?,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not an Ed25519 PKCS#8 key ({e}): restore the buffer's key from its \
                 backup (a new key cannot sign for the old checkpoints)",
                path.display()
            )
        })?;
        Ok(Signer { pair })
    }

    /// The 32 bytes of the public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Lowercase hex SHA-256 of the public key, logged at start.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.public_key())
    }

    /// `GET /v1/public-key`'s body.
    pub fn public_key_json(&self) -> serde_json::Value {
        serde_json::json!({
            "algorithm": "ed25519",
            "public_key": hex(self.public_key()),
            "fingerprint": self.fingerprint(),
        })
    }

    /// A checkpoint of these values, signed.
    pub fn checkpoint(
        &self,
        journal_id: &str,
        seq: u64,
        accepted_at: Option<String>,
        chain: String,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            journal_id: journal_id.to_string(),
            seq,
            accepted_at,
            chain,
            signature: String::new(),
        };
        let signature = self.pair.sign(checkpoint.signed_text().as_bytes());
        checkpoint.signature = hex(signature.as_ref());
        checkpoint
    }
}

/// Makes a new key file, readable by its owner only.
fn create(path: &Path) -> anyhow::Result<Vec<u8>> {
    let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("the system's random source failed: cannot make a key"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(document.as_ref())?;
    file.sync_all()?;
    tracing::info!("signing key made: {}", path.display());
    Ok(document.as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let first = Signer::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        let checkpoint = first.checkpoint("0123456789abcdef", 3, None, "00".repeat(32));
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, again.public_key());
        let signature = contract::chain::parse_hex::<64>(&checkpoint.signature).unwrap();
        assert!(
            key.verify(checkpoint.signed_text().as_bytes(), &signature)
                .is_ok()
        );
        let forged = Checkpoint {
            seq: 4,
            ..checkpoint
        };
        assert!(
            key.verify(forged.signed_text().as_bytes(), &signature)
                .is_err()
        );
    }

    fn key_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn refusal(path: &Path) -> String {
        format!("{:#}", Signer::load_file(path).err().expect("refused"))
    }

    #[test]
    fn a_configured_key_is_loaded_and_refused_when_unfit() {
        let dir = tempfile::tempdir().unwrap();
        let made = Signer::load_or_create(dir.path()).unwrap();
        let der = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        let copy = key_file(dir.path(), "copy.pk8", &der, 0o600);
        assert_eq!(
            Signer::load_file(&copy).unwrap().public_key(),
            made.public_key()
        );

        let open = key_file(dir.path(), "open.pk8", &der, 0o640);
        let text = refusal(&open);
        assert!(
            text.contains("mode 640") && text.contains("chmod 600"),
            "{text}"
        );
        let junk = key_file(dir.path(), "junk.pk8", b"not a key", 0o600);
        let text = refusal(&junk);
        assert!(text.contains("is not an Ed25519 private key"), "{text}");
        let text = refusal(&dir.path().join("missing.pk8"));
        assert!(text.contains("cannot read signing.key_file"), "{text}");
        // Another user's key (mode 000 here: root reads everything, so only for a normal user).
        let locked = key_file(dir.path(), "locked.pk8", &der, 0o000);
        if std::fs::read(&locked).is_err() {
            let text = refusal(&locked);
            assert!(
                text.contains("must be readable by barrage's user"),
                "{text}"
            );
        }
    }
}
