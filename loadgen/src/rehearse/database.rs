//! The PostgreSQL database a rehearsal's intake nodes share (a `[buffer]` on postgres): a
//! throwaway cluster in the run folder (`OUT/postgres/primary`, and `OUT/postgres/standby` with
//! a synchronous standby), started and steered through the `pgcluster` crate, and the faults the
//! `postgres` fault plays on it (stop, SIGKILL, start again, fail over to the standby).
//!
//! The nodes are given one multi-host URL naming the primary and then the standby with
//! `target_session_attrs=read-write`, so after a failover they find the promoted standby by
//! themselves, as they would in production; before it they all reach the primary (the standby
//! is read-only).
//!
//! `pgcluster` is blocking (it runs `initdb`, `psql`, waits on logs): every call runs on a
//! blocking thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pgcluster::{Cluster, SUPERUSER};

/// The database the nodes' journal lives in.
pub const DATABASE: &str = "barrage";

/// The folder inside the run folder that holds the clusters.
pub const POSTGRES_DIR: &str = "postgres";

/// The shared database: a primary and, optionally, its synchronous standby.
pub struct Database {
    dir: PathBuf,
    primary: Arc<Cluster>,
    standby: Option<Arc<Cluster>>,
    /// Whether the standby was promoted (the primary is dead for good then).
    promoted: bool,
}

/// Runs `work` on a blocking thread (pgcluster waits on processes and logs).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("the PostgreSQL task panicked")?
}

impl Database {
    /// Creates and starts the cluster (and its standby) in `out_dir/postgres`, and the database.
    pub async fn start(out_dir: &Path, standby: bool) -> anyhow::Result<Database> {
        let dir = out_dir.join(POSTGRES_DIR);
        // A cluster left by an earlier run into this folder is not this run's.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // The postgres user (under root) must reach the clusters' folders through this one.
        make_traversable(&dir)?;
        let at = dir.clone();
        let (primary, standby) = blocking(move || {
            let primary = Cluster::start(&at.join("primary"))
                .context("cannot start PostgreSQL for the journal (is `postgresql` installed?)")?;
            primary.create_database(DATABASE)?;
            let standby = match standby {
                true => Some(Arc::new(primary.start_standby(&at.join("standby"))?)),
                false => None,
            };
            Ok((Arc::new(primary), standby))
        })
        .await?;
        Ok(Database {
            dir,
            primary,
            standby,
            promoted: false,
        })
    }

    /// The URL every node is given: the primary, then the standby, read-write sessions only.
    pub fn url(&self) -> String {
        let mut hosts = vec![format!("127.0.0.1:{}", self.primary.port())];
        if let Some(standby) = &self.standby {
            hosts.push(format!("127.0.0.1:{}", standby.port()));
        }
        let attrs = if self.standby.is_some() {
            "?target_session_attrs=read-write"
        } else {
            ""
        };
        format!(
            "postgres://{SUPERUSER}@{}/{DATABASE}{attrs}",
            hosts.join(",")
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn has_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// The cluster taking writes now (the standby once promoted).
    fn current(&self) -> Arc<Cluster> {
        match (&self.standby, self.promoted) {
            (Some(standby), true) => standby.clone(),
            _ => self.primary.clone(),
        }
    }

    /// The postmaster's pid and port taking writes now, for fault records.
    pub fn describe_current(&self) -> serde_json::Value {
        let current = self.current();
        serde_json::json!({
            "cluster": current.name(),
            "pid": current.pid(),
            "port": current.port(),
        })
    }

    /// Fast shutdown of the cluster taking writes (every session cut).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let current = self.current();
        blocking(move || current.stop()).await
    }

    /// SIGKILL of the cluster taking writes.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let current = self.current();
        blocking(move || current.kill()).await
    }

    /// Starts the stopped or killed cluster again on its port, after crash recovery.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let current = self.current();
        blocking(move || current.restart()).await
    }

    /// Promotes the standby (the primary killed before): from now on it takes the writes.
    pub async fn promote(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.promoted, "the standby was already promoted");
        let standby = self
            .standby
            .clone()
            .context("a failover needs a standby (standby = true in [buffer], or --standby)")?;
        blocking(move || standby.promote()).await?;
        self.promoted = true;
        Ok(())
    }

    /// Stops every cluster (immediate shutdown) on a blocking thread.
    pub async fn shut_down(self) {
        let Database {
            primary, standby, ..
        } = self;
        let _ = blocking(move || {
            drop(standby);
            drop(primary);
            Ok(())
        })
        .await;
    }
}

/// Lets other users (the postgres user) through `dir` and the run folder above it (a temporary
/// folder is made 0700); refuses, saying what to do, when a folder further up keeps them out.
fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let run_folder = dir.parent().unwrap_or(dir);
    for path in [dir, run_folder] {
        let mode = std::fs::metadata(path)?.permissions().mode();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o011))
            .with_context(|| format!("cannot let the postgres user through {}", path.display()))?;
    }
    let absolute = run_folder.canonicalize()?;
    for parent in absolute.ancestors().skip(1) {
        let mode = std::fs::metadata(parent)?.permissions().mode();
        anyhow::ensure!(
            mode & 0o001 != 0,
            "PostgreSQL runs as the postgres user, which cannot reach {} through {} (mode {:o}): \
             use a run folder whose parents others may search (under /tmp, say), or chmod o+x {}",
            dir.display(),
            parent.display(),
            mode & 0o7777,
            parent.display()
        );
    }
    Ok(())
}
