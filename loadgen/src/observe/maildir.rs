//! `--handover-maildir DIR`: the handover of a foreign buffer (a plain Postfix, say) that delivers
//! each request into a Maildir. Every message file in `DIR/new` and `DIR/cur` is a request handed
//! over; they are ordered by delivery (file mtime, then name — Maildir names begin with the delivery
//! time), numbered 1, 2, 3… in that order (`seq_is_order: true`, `source: "maildir"`,
//! `handed_at` = the file's mtime), and joined to what was sent by `X-Landrush-Id` and Message-ID.
//!
//! [`MaildirWatcher`] follows the folder while a run drains (parsing each new file once);
//! [`read_maildir`] reads the final, ordered handover.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use reports::records::{HandedRecord, JsonlWriter, Stamp, handed_sha256};

use super::{Seen, parse_request_mail};

/// One message file of the Maildir.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    /// The file name up to the `:2,FLAGS` info a reader may add when moving it to cur/.
    key: String,
    mtime: SystemTime,
}

fn entries(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let folder = dir.join(sub);
        let listing = match std::fs::read_dir(&folder) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", folder.display())),
        };
        for item in listing {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            // A file moved or removed since the listing is simply not there any more.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let key = name.split(':').next().unwrap_or(&name).to_string();
            out.push(Entry {
                path: item.path(),
                key,
                mtime: meta.modified()?,
            });
        }
    }
    Ok(out)
}

fn stamp_of(t: SystemTime) -> Stamp {
    let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    Stamp::from_micros(micros)
}

/// Reads every message of the Maildir as handed records, in order of delivery.
pub fn read_maildir(dir: &Path) -> anyhow::Result<Vec<HandedRecord>> {
    anyhow::ensure!(
        dir.join("new").is_dir() || dir.join("cur").is_dir(),
        "{} is not a Maildir (no new/ or cur/)",
        dir.display()
    );
    let mut entries = entries(dir)?;
    entries.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.key.cmp(&b.key)));
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let raw = match std::fs::read(&entry.path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", entry.path.display()));
            }
        };
        let mail = parse_request_mail(&raw);
        out.push(HandedRecord {
            seq: out.len() as u64 + 1,
            seq_is_order: true,
            accepted_at: None,
            message_id: mail.message_id,
            landrush_id: mail.landrush_id,
            domain: mail.domain,
            sender: None,
            handed_at: stamp_of(entry.mtime),
            source: "maildir".into(),
            raw_sha256: Some(handed_sha256(&raw)),
        });
    }
    Ok(out)
}

/// Writes the Maildir's handover to `handed_path` (handed.jsonl); returns how many records.
pub fn write_handed(dir: &Path, handed_path: &Path) -> anyhow::Result<usize> {
    let records = read_maildir(dir)?;
    let mut out = JsonlWriter::create(handed_path)?;
    for record in &records {
        out.write(record)?;
    }
    out.flush()?;
    Ok(records.len())
}

/// Follows a Maildir while a run drains: each [`poll`](MaildirWatcher::poll) parses the files not
/// seen before and notes their keys in [`seen`](MaildirWatcher::seen).
pub struct MaildirWatcher {
    dir: PathBuf,
    known: HashSet<String>,
    pub seen: Arc<Seen>,
}

impl MaildirWatcher {
    pub fn new(dir: &Path) -> Self {
        MaildirWatcher {
            dir: dir.to_path_buf(),
            known: HashSet::new(),
            seen: Arc::new(Seen::default()),
        }
    }

    /// Parses the new arrivals; returns how many there were.
    pub fn poll(&mut self) -> anyhow::Result<usize> {
        let mut fresh = 0;
        for entry in entries(&self.dir)? {
            if self.known.contains(&entry.key) {
                continue;
            }
            let Ok(raw) = std::fs::read(&entry.path) else {
                continue;
            };
            let mail = parse_request_mail(&raw);
            self.seen
                .note([mail.landrush_id.as_deref(), mail.message_id.as_deref()]);
            self.known.insert(entry.key);
            fresh += 1;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_order_is_mtime_then_name() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let mail = |n: u32| {
            format!("Message-ID: <r{n}@landrush>\r\nX-Landrush-Id: r{n}\r\n\r\ndomain: d{n}.fr\r\n")
        };
        let write = |sub: &str, name: &str, n: u32, secs: u64| {
            let path = dir.path().join(sub).join(name);
            std::fs::write(&path, mail(n)).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        write("new", "200.b.host", 2, 200);
        write("cur", "100.a.host:2,S", 1, 100);
        write("new", "200.a.host", 3, 200);
        write("tmp", "50.x.host", 9, 50);
        let handed = read_maildir(dir.path()).unwrap();
        let ids: Vec<_> = handed
            .iter()
            .map(|h| (h.seq, h.landrush_id.clone().unwrap()))
            .collect();
        assert_eq!(
            ids,
            vec![(1, "r1".into()), (2, "r3".into()), (3, "r2".into())]
        );
        assert!(
            handed
                .iter()
                .all(|h| h.seq_is_order && h.source == "maildir")
        );
        let mut watcher = MaildirWatcher::new(dir.path());
        assert_eq!(watcher.poll().unwrap(), 3);
        assert_eq!(watcher.poll().unwrap(), 0);
        assert!(watcher.seen.contains_any(["<r2@landrush>"]));
    }
}
