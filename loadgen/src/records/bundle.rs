//! A shard's run folder as one file a volunteer can send back: `NAME.tar.gz` holding `NAME/` and
//! `NAME/MANIFEST.sha256`, one line `HEX  PATH` per file (the `sha256sum` format, so it can be
//! checked by hand too). [`unpack`] refuses a bundle whose files do not match their sums, or
//! that holds a file the manifest does not list, naming the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::folder::LOCK_FILE;

/// The manifest's name inside the bundle's folder.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// A bundle larger than this once unpacked is refused (a run's records are far smaller).
const MAX_UNPACKED: u64 = 8 << 30;

/// Whether `path` names a bundle rather than a run folder.
pub fn is_bundle(path: &Path) -> bool {
    path.is_file() && path.to_string_lossy().ends_with(".tar.gz")
}

/// Writes `dir` as `out` (default: `DIR.tar.gz` beside it) with its manifest; returns the file.
pub fn write(dir: &Path, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot read the run folder {}", dir.display()))?;
    let name = dir
        .file_name()
        .context("a run folder with a name")?
        .to_string_lossy()
        .to_string();
    let out = out.map_or_else(
        || dir.with_file_name(format!("{name}.tar.gz")),
        Path::to_path_buf,
    );
    let sums = sums_of(&dir)?;
    let manifest: String = sums.iter().map(|(p, s)| format!("{s}  {p}\n")).collect();
    let file = File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    for path in sums.keys() {
        tar.append_path_with_name(dir.join(path), format!("{name}/{path}"))?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        format!("{name}/{MANIFEST}"),
        manifest.as_bytes(),
    )?;
    tar.into_inner()?.finish()?;
    Ok(out)
}

/// Every regular file under `dir` (relative, `/`-separated) but the lock and the manifest, with its
/// SHA-256.
fn sums_of(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if kind.is_file() && relative != LOCK_FILE && relative != MANIFEST {
                sums.insert(relative, sha256_file(&path)?);
            }
        }
    }
    Ok(sums)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = BufReader::new(
        File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(contract::chain::hex(&hasher.finalize()))
}

/// Unpacks `bundle` into `into` and checks it against its manifest; returns the run folder.
pub fn unpack(bundle: &Path, into: &Path) -> anyhow::Result<PathBuf> {
    let file = File::open(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    std::fs::create_dir_all(into).with_context(|| format!("cannot create {}", into.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut total = 0u64;
    let mut top = None;
    for entry in archive.entries()? {
        let mut entry = entry.with_context(|| format!("{}: not a tar.gz", bundle.display()))?;
        total += entry.size();
        ensure!(
            total <= MAX_UNPACKED,
            "{}: larger than a run",
            bundle.display()
        );
        let path = entry.path()?.to_path_buf();
        let first = path.components().next().map(|c| c.as_os_str().to_owned());
        ensure!(
            top.is_none() || top == first,
            "{}: more than one folder in the bundle",
            bundle.display()
        );
        top = first;
        ensure!(
            entry.unpack_in(into)?,
            "{}: entry {} leaves the bundle's folder",
            bundle.display(),
            path.display()
        );
    }
    let dir = into.join(top.with_context(|| format!("{}: empty bundle", bundle.display()))?);
    verify(bundle, &dir)?;
    Ok(dir)
}

/// The files of `dir` are exactly those of its manifest, with the same sums.
fn verify(bundle: &Path, dir: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("{}: no {MANIFEST}; not a landrush bundle", bundle.display()))?;
    let mut listed = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, path) = line
            .split_once("  ")
            .with_context(|| format!("{}: bad manifest line `{line}`", bundle.display()))?;
        listed.insert(path.to_string(), sum.to_string());
    }
    let found = sums_of(dir)?;
    for (path, sum) in &found {
        match listed.get(path) {
            None => bail!("{}: {path} is not in the manifest", bundle.display()),
            Some(want) if want != sum => bail!(
                "{}: {path} does not match its SHA-256 in the manifest (damaged or edited); ask \
                 for the bundle again",
                bundle.display()
            ),
            Some(_) => {}
        }
    }
    if let Some(path) = listed.keys().find(|p| !found.contains_key(*p)) {
        bail!(
            "{}: {path} is in the manifest but not in the bundle",
            bundle.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(root: &Path) -> PathBuf {
        let dir = root.join("shard-2");
        std::fs::create_dir_all(dir.join("goose")).unwrap();
        std::fs::write(dir.join("run.json"), "{}\n").unwrap();
        std::fs::write(dir.join("sent.jsonl"), "{\"id\":\"r1\"}\n").unwrap();
        std::fs::write(dir.join("goose/report.txt"), "x").unwrap();
        std::fs::write(dir.join(LOCK_FILE), "1").unwrap();
        dir
    }

    #[test]
    fn a_bundle_round_trips_with_its_manifest() {
        let root = tempfile::tempdir().unwrap();
        let file = write(&folder(root.path()), None).unwrap();
        assert!(file.ends_with("shard-2.tar.gz") && is_bundle(&file));
        let into = tempfile::tempdir().unwrap();
        let dir = unpack(&file, into.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("sent.jsonl")).unwrap(),
            "{\"id\":\"r1\"}\n"
        );
        assert!(dir.join("goose/report.txt").is_file());
        assert!(!dir.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_bundle_whose_file_does_not_match_its_sum_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = folder(root.path());
        let file = write(&dir, None).unwrap();
        // Rebuild the tar with an edited sent.jsonl but the original manifest.
        let into = tempfile::tempdir().unwrap();
        let good = unpack(&file, into.path()).unwrap();
        std::fs::write(good.join("sent.jsonl"), "{\"id\":\"r2\"}\n").unwrap();
        let tampered = root.path().join("tampered.tar.gz");
        let out = File::create(&tampered).unwrap();
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::default()));
        tar.append_dir_all("shard-2", &good).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let again = tempfile::tempdir().unwrap();
        let err = unpack(&tampered, again.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("sent.jsonl does not match"),
            "{err:#}"
        );
    }
}
