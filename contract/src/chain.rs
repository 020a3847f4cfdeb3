//! The journal's hash chain (contract: Provable order): the one definition of `canonical(n)`,
//! `chain(0)` and the link `chain(n)`, shared by barrage (which writes the chain) and landrush
//! (which verifies it from the outside).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// What separates chains of other versions and other purposes from this one.
pub const GENESIS_PREFIX: &str = "barrage-chain-v1\n";

/// The values of one stored request that the chain covers, as the Handover API serves them.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub seq: u64,
    /// RFC 3339 UTC with six fractional digits and `Z` (contract: Run records).
    pub accepted_at: &'a str,
    pub intake: &'a str,
    pub message_id: &'a str,
    pub sender: &'a str,
    pub domain: &'a str,
    pub fields: &'a BTreeMap<String, String>,
    /// Lowercase hex SHA-256 of the raw message as stored.
    pub raw_sha256: &'a str,
}

/// `canonical(n)`: the RFC 8785 (JCS) text of the entry's object. Keys are sorted by UTF-16 code
/// units (nested `fields` too); serde_json escapes strings exactly as JCS does (`"`, `\`, the
/// controls as `\b \f \n \r \t` or `\u00xx`, nothing else); `seq` is an integer.
pub fn canonical(entry: &Entry) -> String {
    Middle::of(entry).canonical(entry.seq, entry.accepted_at)
}

/// The members of `canonical(n)` between `accepted_at` and `seq`, which sort first and last:
/// everything known before the journal writer assigns the seq and the time, so the writer only
/// adds those two (the text is the same as if written at once; a test holds it to that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Middle(String);

impl Middle {
    /// The middle members of `entry` (its `seq` and `accepted_at` are not read).
    pub fn of(entry: &Entry) -> Middle {
        let fields = jcs_object(
            entry
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), jcs_string(v)))
                .collect(),
        );
        let whole = jcs_object(vec![
            ("intake", jcs_string(entry.intake)),
            ("message_id", jcs_string(entry.message_id)),
            ("sender", jcs_string(entry.sender)),
            ("domain", jcs_string(entry.domain)),
            ("fields", fields),
            ("raw_sha256", jcs_string(entry.raw_sha256)),
        ]);
        Middle(whole[1..whole.len() - 1].to_string())
    }

    /// `canonical(n)` with this middle.
    pub fn canonical(&self, seq: u64, accepted_at: &str) -> String {
        format!(
            "{{\"accepted_at\":{},{},\"seq\":{seq}}}",
            jcs_string(accepted_at),
            self.0
        )
    }
}

/// An object from keys and already canonical values, keys sorted as JCS sorts them.
pub fn jcs_object(mut members: Vec<(&str, String)>) -> String {
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    let mut out = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&jcs_string(key));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// A JSON string in JCS form.
pub fn jcs_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `chain(0) = SHA-256("barrage-chain-v1\n" ‖ journal_id)`.
pub fn genesis(journal_id: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(GENESIS_PREFIX.as_bytes());
    hash.update(journal_id.as_bytes());
    hash.finalize().into()
}

/// `chain(n) = SHA-256(chain(n−1) as 32 raw bytes ‖ canonical(n))`.
pub fn link(previous: &[u8; 32], canonical: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(previous);
    hash.update(canonical.as_bytes());
    hash.finalize().into()
}

/// The lowercase hex SHA-256 of a raw message: its `raw_sha256`.
pub fn raw_sha256(raw: &[u8]) -> String {
    hex(&Sha256::digest(raw))
}

/// Lowercase hex, the encoding of every digest and signature the contract serves.
/// By table rather than `write!` per byte: it runs for every request on the intake's path.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Parses lowercase or uppercase hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A signed checkpoint (`GET /v1/checkpoint`): the buffer's commitment to the whole order up to
/// `seq`. `signature` is the lowercase hex Ed25519 signature over the UTF-8 bytes of
/// [`Checkpoint::signed_text`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub journal_id: String,
    /// The newest committed seq (0 for an empty journal).
    pub seq: u64,
    /// Its accepted-at; `null` for an empty journal.
    pub accepted_at: Option<String>,
    /// `chain(seq)`, lowercase hex.
    pub chain: String,
    pub signature: String,
}

impl Checkpoint {
    /// The JCS text of `{"journal_id", "seq", "accepted_at", "chain"}`: what the signature covers.
    pub fn signed_text(&self) -> String {
        let at = self
            .accepted_at
            .as_deref()
            .map_or("null".into(), jcs_string);
        jcs_object(vec![
            ("journal_id", jcs_string(&self.journal_id)),
            ("seq", self.seq.to_string()),
            ("accepted_at", at),
            ("chain", jcs_string(&self.chain)),
        ])
    }
}

/// The name of the ack header that carries a receipt.
pub const RECEIPT_HEADER: &str = "X-Barrage-Receipt";

/// A receipt (the signed checkpoint of the acknowledged request's seq) as [`RECEIPT_HEADER`]
/// carries it: `journal_id=ID; seq=N; accepted_at=T; chain=HEX; signature=HEX`.
pub fn receipt_header(receipt: &Checkpoint) -> String {
    format!(
        "journal_id={}; seq={}; accepted_at={}; chain={}; signature={}",
        receipt.journal_id,
        receipt.seq,
        receipt.accepted_at.as_deref().unwrap_or(""),
        receipt.chain,
        receipt.signature
    )
}

/// Parses [`receipt_header`]'s text (unfolded: any whitespace around `;` and `=` is ignored).
pub fn parse_receipt_header(value: &str) -> Option<Checkpoint> {
    let mut pairs = BTreeMap::new();
    for part in value.split(';') {
        let (key, value) = part.split_once('=')?;
        pairs.insert(key.trim(), value.trim());
    }
    let accepted_at = pairs.get("accepted_at").filter(|at| !at.is_empty());
    Some(Checkpoint {
        journal_id: pairs.get("journal_id")?.to_string(),
        seq: pairs.get("seq")?.parse().ok()?,
        accepted_at: accepted_at.map(|at| at.to_string()),
        chain: pairs.get("chain")?.to_string(),
        signature: pairs.get("signature")?.to_string(),
    })
}

/// The public key's fingerprint as barrage logs it: lowercase hex SHA-256 of the 32 key bytes.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex(&Sha256::digest(public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_keys_and_escapes_only_what_json_requires() {
        let fields = BTreeMap::from([
            ("registrant".to_string(), "Zoé \"Z\"\n/é".to_string()),
            ("domain".to_string(), "paris.fr".to_string()),
        ]);
        let entry = Entry {
            seq: 7,
            accepted_at: "2026-12-01T10:00:00.000001Z",
            intake: "smtp",
            message_id: "<a@b>",
            sender: "a@b.example",
            domain: "paris.fr",
            fields: &fields,
            raw_sha256: "00",
        };
        assert_eq!(
            canonical(&entry),
            "{\"accepted_at\":\"2026-12-01T10:00:00.000001Z\",\"domain\":\"paris.fr\",\
             \"fields\":{\"domain\":\"paris.fr\",\"registrant\":\"Zoé \\\"Z\\\"\\n/é\"},\
             \"intake\":\"smtp\",\"message_id\":\"<a@b>\",\"raw_sha256\":\"00\",\
             \"sender\":\"a@b.example\",\"seq\":7}"
        );
        assert_eq!(jcs_string("\u{1}\u{1f}"), "\"\\u0001\\u001f\"");
    }

    #[test]
    fn the_middle_and_the_ends_make_the_whole_object_in_jcs_order() {
        // Keys whose UTF-8 and UTF-16 orders differ, and values that need escapes.
        let members = [
            ("zz", "1"),
            ("a", "\"q\"\\\n"),
            ("\u{1F600}", "é"),
            ("\u{FF61}", "\u{7f}"),
        ];
        let fields: BTreeMap<String, String> = (members.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let fields_object = jcs_object(members.iter().map(|(k, v)| (*k, jcs_string(v))).collect());
        let entry = Entry {
            seq: 12,
            accepted_at: "2026-12-01T10:00:00.000001Z",
            intake: "http",
            message_id: "<m>",
            sender: "s@x",
            domain: "d.fr",
            fields: &fields,
            raw_sha256: "ff",
        };
        let whole = jcs_object(vec![
            ("seq", "12".into()),
            ("accepted_at", jcs_string(entry.accepted_at)),
            ("intake", jcs_string(entry.intake)),
            ("message_id", jcs_string(entry.message_id)),
            ("sender", jcs_string(entry.sender)),
            ("domain", jcs_string(entry.domain)),
            ("fields", fields_object),
            ("raw_sha256", jcs_string(entry.raw_sha256)),
        ]);
        assert_eq!(canonical(&entry), whole);
    }

    #[test]
    fn keys_sort_by_utf16_code_units_not_bytes() {
        // U+FF61 sorts after U+1F600 in UTF-8 bytes but before it in UTF-16 units.
        let text = jcs_object(vec![("\u{1F600}", "1".into()), ("\u{FF61}", "2".into())]);
        assert_eq!(text, "{\"\u{1F600}\":1,\"\u{FF61}\":2}");
    }

    #[test]
    fn a_receipt_header_round_trips_even_folded() {
        let receipt = Checkpoint {
            journal_id: "0123456789abcdef".into(),
            seq: 6,
            accepted_at: Some("2026-12-01T10:00:00.000001Z".into()),
            chain: "ab".repeat(32),
            signature: "cd".repeat(64),
        };
        let folded = receipt_header(&receipt).replace("; ", ";\r\n ");
        assert_eq!(parse_receipt_header(&folded), Some(receipt));
        assert_eq!(parse_receipt_header("seq=1; chain=00"), None);
    }

    #[test]
    fn hex_round_trips() {
        let digest = genesis("0123456789abcdef");
        assert_eq!(parse_hex::<32>(&hex(&digest)), Some(digest));
        assert_eq!(parse_hex::<32>("zz"), None);
    }

    /// The worked example of docs/contract.md (Provable order), recomputed.
    fn worked_example() -> Vec<String> {
        let id = "0123456789abcdef";
        let mut out = vec![hex(&genesis(id))];
        let mut previous = genesis(id);
        let raws = [
            "Message-ID: <1@a.example>\r\n\r\ndomain: paris.fr\r\n",
            "Message-ID: <2@b.example>\r\n\r\ndomain: lyon.fr\r\n",
        ];
        for (n, raw) in raws.iter().enumerate() {
            let seq = n as u64 + 1;
            let domain = if seq == 1 { "paris.fr" } else { "lyon.fr" };
            let fields = BTreeMap::from([("domain".to_string(), domain.to_string())]);
            let digest = raw_sha256(raw.as_bytes());
            let at = format!("2026-12-01T10:00:00.00000{seq}Z");
            let (id, sender) = (format!("<{seq}@{}.example>", ["a", "b"][n]), "r@x.example");
            let entry = Entry {
                seq,
                accepted_at: &at,
                intake: "smtp",
                message_id: &id,
                sender,
                domain,
                fields: &fields,
                raw_sha256: &digest,
            };
            let text = canonical(&entry);
            previous = link(&previous, &text);
            out.extend([digest, text, hex(&previous)]);
        }
        let checkpoint = Checkpoint {
            journal_id: id.into(),
            seq: 2,
            accepted_at: Some("2026-12-01T10:00:00.000002Z".into()),
            chain: hex(&previous),
            signature: String::new(),
        };
        out.push(checkpoint.signed_text());
        out
    }

    #[test]
    fn the_contract_shows_the_worked_example_as_the_code_computes_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contract.md");
        let doc = std::fs::read_to_string(path).unwrap();
        for value in worked_example() {
            assert!(doc.contains(&value), "docs/contract.md lacks {value}");
        }
    }
}
