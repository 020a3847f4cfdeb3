//! The provable order from the inside (contract: Provable order): after a real load over SMTP
//! the served rows carry a chain a third party can recompute, `barrage audit` passes, and each
//! edit of the SQLite file (an `UPDATE` of one row's domain, a deleted row, two swapped rows, a
//! stray outbox row, a cursor beyond the last seq) is caught and named by its seq.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use contract::chain::{Entry, canonical, genesis, hex, link, raw_sha256};
use support::{Barrage, Client, output_tied, request_mail};

const REQUESTS: u32 = 50;

async fn load(addr: std::net::SocketAddr) {
    let mut client = Client::greet(addr).await;
    for n in 0..REQUESTS {
        let mail = request_mail(&format!("<{n}@audit.test>"), &format!("d{n}.fr"));
        let reply = client.submit("a@client.example", &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
    }
}

fn audit(dir: &Path) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_barrage"));
    command.arg("audit").arg("--data-dir").arg(dir);
    let out = output_tied(command);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of the stopped journal (barrage.db alone is complete after a clean stop), edited.
fn tampered(source: &Path, root: &Path, name: &str, sql: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(source.join("barrage.db"), dir.join("barrage.db")).unwrap();
    let conn = rusqlite::Connection::open(dir.join("barrage.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    dir
}

/// Recomputes every served row's `raw_sha256` (from `raw=true`) and chain from outside.
async fn verify_served(barrage: &Barrage) {
    let page = barrage
        .get("/v1/requests?after=0&limit=1000&raw=true")
        .await;
    let journal_id = page["journal_id"].as_str().unwrap();
    let rows = page["requests"].as_array().unwrap();
    assert_eq!(rows.len(), REQUESTS as usize);
    let mut previous = genesis(journal_id);
    for row in rows {
        let text = |key: &str| row[key].as_str().unwrap().to_string();
        let digest = raw_sha256(text("raw").as_bytes());
        assert_eq!(digest, text("raw_sha256"));
        let fields: BTreeMap<String, String> =
            serde_json::from_value(row["fields"].clone()).unwrap();
        let (at, intake, id, sender, domain) = (
            text("accepted_at"),
            text("intake"),
            text("message_id"),
            text("sender"),
            text("domain"),
        );
        let entry = Entry {
            seq: row["seq"].as_u64().unwrap(),
            accepted_at: &at,
            intake: &intake,
            message_id: &id,
            sender: &sender,
            domain: &domain,
            fields: &fields,
            raw_sha256: &digest,
        };
        previous = link(&previous, &canonical(&entry));
        assert_eq!(hex(&previous), text("chain"), "seq {}", entry.seq);
    }
}

#[tokio::test]
async fn a_real_load_audits_clean_and_every_edit_is_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let mut barrage = Barrage::start(&dir, &[]);
    load(barrage.smtp).await;
    verify_served(&barrage).await;
    let (ok, text) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || audit(&dir)
    })
    .await
    .unwrap();
    assert!(ok, "an audit while serving passes: {text}");
    assert!(text.contains("50 requests"), "{text}");
    assert!(barrage.terminate().success());
    let (ok, text) = audit(&dir);
    assert!(ok && text.contains("every chain link verified"), "{text}");

    let cases = [
        (
            "update",
            "UPDATE requests SET domain = 'paris.fr' WHERE seq = 20",
            "seq 20: the chain link does not verify",
        ),
        (
            "delete",
            "DELETE FROM requests WHERE seq = 30",
            "seq 31: seq 30 is missing",
        ),
        (
            "swap",
            "UPDATE requests SET seq = -1 WHERE seq = 10;
             UPDATE requests SET seq = 10 WHERE seq = 11;
             UPDATE requests SET seq = 11 WHERE seq = -1;",
            "seq 10: the chain link does not verify",
        ),
        (
            "no-outbox-row",
            "INSERT INTO acks (seq, state, queued_at) SELECT seq, 'sent', accepted_at FROM requests;
             DELETE FROM acks WHERE seq = 7",
            "seq 7: the request has an ack address but no outbox row",
        ),
        (
            "stray",
            "INSERT INTO acks (seq, state, queued_at) SELECT seq, 'sent', accepted_at FROM requests;
             INSERT INTO acks (seq, state, queued_at) VALUES (99, 'pending', 0)",
            "seq 99: an outbox row exists for no request with an ack address",
        ),
        (
            "cursor",
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', '51')",
            "seq 51: the cursor 51 is beyond the last seq 50",
        ),
    ];
    for (name, sql, named) in cases {
        let edited = tampered(&dir, root.path(), name, sql);
        let (ok, text) = audit(&edited);
        assert!(!ok, "{name}: the audit must fail: {text}");
        assert!(text.contains(named), "{name}: expected {named:?} in {text}");
    }
}

#[test]
fn a_raw_message_changed_with_its_digest_is_caught_by_the_chain() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut barrage = Barrage::start(&dir, &[]);
    runtime.block_on(load(barrage.smtp));
    assert!(barrage.terminate().success());
    let raw = b"domain: forged.fr\r\n";
    let digest = raw_sha256(raw);
    let sql = format!(
        "UPDATE requests SET raw = CAST('domain: forged.fr' || char(13, 10) AS BLOB), \
         raw_sha256 = '{digest}' WHERE seq = 5"
    );
    let edited = tampered(&dir, root.path(), "raw", &sql);
    let (ok, text) = audit(&edited);
    assert!(!ok && text.contains("seq 5: the chain link"), "{text}");
    let edited = tampered(
        &dir,
        root.path(),
        "raw-only",
        "UPDATE requests SET raw = CAST('x' AS BLOB) WHERE seq = 6",
    );
    let (ok, text) = audit(&edited);
    assert!(!ok && text.contains("seq 6: raw_sha256 is"), "{text}");
}

#[tokio::test]
async fn the_checkpoint_is_signed_by_the_served_key_and_commits_to_the_last_chain() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let barrage = Barrage::start(&dir, &[]);
    let empty: contract::chain::Checkpoint =
        serde_json::from_value(barrage.get("/v1/checkpoint").await).unwrap();
    assert_eq!((empty.seq, empty.accepted_at.as_deref()), (0, None));
    assert_eq!(empty.chain, hex(&genesis(&empty.journal_id)));
    load(barrage.smtp).await;
    let key = barrage.get("/v1/public-key").await;
    let key = contract::chain::parse_hex::<32>(key["public_key"].as_str().unwrap()).unwrap();
    let checkpoint: contract::chain::Checkpoint =
        serde_json::from_value(barrage.get("/v1/checkpoint").await).unwrap();
    let rows = barrage.all_requests().await;
    let last = rows.last().unwrap();
    assert_eq!(checkpoint.seq, u64::from(REQUESTS));
    assert_eq!(checkpoint.chain, last["chain"].as_str().unwrap());
    assert_eq!(
        checkpoint.accepted_at.as_deref(),
        last["accepted_at"].as_str()
    );
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    let signature = contract::chain::parse_hex::<64>(&checkpoint.signature).unwrap();
    let text = checkpoint.signed_text();
    assert!(verifier.verify(text.as_bytes(), &signature).is_ok());
    let moved = contract::chain::Checkpoint {
        seq: 49,
        ..checkpoint
    };
    assert!(
        verifier
            .verify(moved.signed_text().as_bytes(), &signature)
            .is_err()
    );
    let mode = std::fs::metadata(dir.join(barrage::signing::KEY_FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}
