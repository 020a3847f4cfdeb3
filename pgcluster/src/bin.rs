//! Where the PostgreSQL server binaries are: Debian keeps them off PATH.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

/// The directory holding `initdb`, `postgres`, `pg_basebackup` and `psql`: `$PG_BINDIR`, else
/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn bindir() -> Result<PathBuf> {
    let complete = |dir: &PathBuf| {
        ["initdb", "postgres", "pg_basebackup", "psql"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        if complete(&dir) {
            return Ok(dir);
        }
        bail!(
            "PG_BINDIR={} does not hold initdb, postgres, pg_basebackup and psql",
            dir.display()
        );
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if complete(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin): \
             install the Debian package `postgresql`, or set PG_BINDIR"
        ),
    }
}
