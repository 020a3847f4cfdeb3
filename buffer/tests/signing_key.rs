//! The signing key taken from the config (contract: Provable order): a key made with `openssl
//! genpkey` and named by `[signing] key_file` is the one barrage serves at `/v1/public-key` and
//! signs checkpoints with, and none is made in the data dir; a key file others may read is refused
//! at start with a message naming the file and the fix.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use contract::chain::{Checkpoint, hex, parse_hex};
use ring::signature::{ED25519, UnparsedPublicKey};
use support::{Barrage, Client, output_tied, request_mail, serve_command};

/// A PEM PKCS#8 Ed25519 key made as an operator would, mode 0600; `None` without openssl.
fn openssl_key(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("signing-key.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status();
    if !made.is_ok_and(|status| status.success()) {
        return None;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some(path)
}

/// The public key of `key`, as openssl reads it: the last 32 bytes of the DER public key.
fn openssl_public_key(key: &Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success());
    hex(&out.stdout[out.stdout.len() - 32..])
}

fn config_naming(dir: &Path, key: &Path) -> PathBuf {
    let config = dir.join("barrage.toml");
    let text = format!("[signing]\nkey_file = {:?}\n", key.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test]
async fn the_configured_key_is_served_and_signs_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let Some(key) = openssl_key(root.path()) else {
        eprintln!("NOTE: skipped: openssl is not installed (apt-get install -y openssl)");
        return;
    };
    let config = config_naming(root.path(), &key);
    let data = root.path().join("data");
    let barrage = Barrage::start(&data, &["--config", config.to_str().unwrap()]);
    let served = barrage.get("/v1/public-key").await;
    let public_key = openssl_public_key(&key);
    assert_eq!(served["public_key"], public_key.as_str(), "{served}");
    let mut client = Client::greet(barrage.smtp).await;
    for n in 0..3 {
        let mail = request_mail(&format!("<{n}@key.test>"), &format!("k{n}.fr"));
        assert_eq!(client.submit("a@client.example", &mail).await.code, 250);
    }
    let checkpoint: Checkpoint =
        serde_json::from_value(barrage.get("/v1/checkpoint").await).unwrap();
    assert_eq!(checkpoint.seq, 3);
    let verifier = UnparsedPublicKey::new(&ED25519, parse_hex::<32>(&public_key).unwrap());
    let signature = parse_hex::<64>(&checkpoint.signature).unwrap();
    let text = checkpoint.signed_text();
    assert!(verifier.verify(text.as_bytes(), &signature).is_ok());
    assert!(
        !data.join(barrage::signing::KEY_FILE).exists(),
        "no key made in the data dir"
    );
}

#[test]
fn a_key_file_others_may_read_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let Some(key) = openssl_key(root.path()) else {
        eprintln!("NOTE: skipped: openssl is not installed (apt-get install -y openssl)");
        return;
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config_naming(root.path(), &key);
    let mut command = serve_command(&root.path().join("data"), "127.0.0.1:0");
    command.arg("--config").arg(&config);
    let out = output_tied(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("signing.key_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}
