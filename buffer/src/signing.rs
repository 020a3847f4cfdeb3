//! The buffer's signing key (contract: Provable order): an Ed25519 key pair made at first start
//! in the data dir (`signing-key.pk8`, PKCS#8, mode 0600) and the signed checkpoints made with it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use contract::chain::{Checkpoint, fingerprint, hex};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "signing-key.pk8";

/// The key pair that signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
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
    use std::os::unix::fs::PermissionsExt;

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
}
