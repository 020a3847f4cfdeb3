//! Claiming a run folder: a landrush that writes into a folder holds an exclusive lock on a file
//! in it for as long as it runs, so two runs started by mistake into one folder cannot mix their
//! records, configs or acks; and a folder that already holds a run's records is refused unless
//! the caller asked to overwrite them.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The lock file in a claimed run folder (it holds the pid of the landrush that claimed it).
pub const LOCK_FILE: &str = ".landrush.lock";

/// Files that mean a folder holds a run's records.
const RECORDS: [&str; 7] = [
    reports::records::SENT,
    reports::records::HANDED,
    reports::records::ACKS,
    reports::records::RUN,
    reports::records::FAULTS,
    reports::records::STATS,
    reports::REPORT_JSON,
];

/// What to do with a folder that already holds records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse it, saying `--overwrite` would replace them.
    #[default]
    Refuse,
    /// Empty the folder first.
    Overwrite,
}

impl Existing {
    /// [`Existing::Overwrite`] when `overwrite` (a `--overwrite` flag) is set.
    pub fn overwrite_if(overwrite: bool) -> Existing {
        if overwrite {
            Existing::Overwrite
        } else {
            Existing::Refuse
        }
    }
}

/// A run folder claimed by this process; the lock is released when it is dropped (or when the
/// process dies, however it dies).
#[derive(Debug)]
pub struct RunFolder {
    path: PathBuf,
    _lock: File,
}

impl RunFolder {
    /// Creates `path` if needed and claims it: fails if another landrush holds it, or if it
    /// holds records and `existing` is [`Existing::Refuse`].
    pub fn claim(path: &Path, existing: Existing) -> anyhow::Result<RunFolder> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the run folder {}", path.display()))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                bail!(
                    "the run folder {} is in use by another landrush (pid {}); wait for it to \
                     finish or give another --out",
                    path.display(),
                    holder.trim()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        let held: Vec<&str> = RECORDS
            .iter()
            .copied()
            .filter(|name| path.join(name).exists())
            .collect();
        if !held.is_empty() {
            match existing {
                Existing::Refuse => bail!(
                    "the run folder {} already holds the records of a run ({}); give another \
                     --out, or --overwrite to replace them",
                    path.display(),
                    held.join(", ")
                ),
                Existing::Overwrite => empty_but_lock(path)?,
            }
        }
        lock.set_len(0)?;
        writeln!(lock, "{}", std::process::id())?;
        Ok(RunFolder {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes everything in `dir` but the lock file.
fn empty_but_lock(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot remove {} to overwrite it", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_folder_is_refused_to_a_second_claim_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunFolder::claim(dir.path(), Existing::Refuse).unwrap();
        let err = RunFolder::claim(dir.path(), Existing::Overwrite).unwrap_err();
        assert!(
            format!("{err:#}").contains("in use by another landrush"),
            "{err:#}"
        );
        drop(first);
        RunFolder::claim(dir.path(), Existing::Refuse).unwrap();
    }

    #[test]
    fn records_are_kept_unless_overwrite_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(reports::records::SENT), "{}\n").unwrap();
        std::fs::create_dir(dir.path().join("goose")).unwrap();
        let err = RunFolder::claim(dir.path(), Existing::Refuse).unwrap_err();
        assert!(format!("{err:#}").contains("--overwrite"), "{err:#}");
        assert!(dir.path().join(reports::records::SENT).exists());
        let _claimed = RunFolder::claim(dir.path(), Existing::Overwrite).unwrap();
        assert!(!dir.path().join(reports::records::SENT).exists());
        assert!(!dir.path().join("goose").exists());
    }
}
