//! The data dir's privacy: requests carry personal data (holders, contacts), so the data dir is
//! created 0700 and every file in it 0600, as Postfix keeps its queue. The process umask is set
//! before SQLite opens anything, so the database, its WAL and SHM, the lock and every file barrage
//! writes later are private from birth. A dir or file found readable by others is warned about,
//! not changed: the operator may have set it so on purpose.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Group and others get nothing on every file and directory the process creates from now on.
pub fn restrict_umask() {
    // SAFETY: umask has no preconditions; it only changes this process's creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// One warning per entry of `dir` (itself and the files directly in it) that group or others may
/// read, write or enter, each saying what to run to fix it.
pub fn exposed_entries(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut check = |path: &Path, wanted: u32| -> std::io::Result<()> {
        let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "{} is open to other users (mode {mode:04o}): it holds requesters' personal \
                 data; run `chmod {wanted:o} {}`",
                path.display(),
                path.display()
            ));
        }
        Ok(())
    };
    check(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            check(&entry.path(), 0o600)?;
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_dir_and_file_are_named_and_private_ones_are_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        create_private_dir(&dir).unwrap();
        let file = dir.join("barrage.db");
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(exposed_entries(&dir).unwrap().is_empty());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warnings = exposed_entries(&dir).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("mode 0755"), "{warnings:?}");
        assert!(warnings[1].contains("chmod 600"), "{warnings:?}");
    }
}
