//! `endpoints.json`: the file in the data dir that says where a running barrage listens, for
//! scripts and the harness, which may start barrage on port 0. The one definition of its format
//! (`{"smtp": ADDR, "http": ADDR, "web": ADDR, "pid": N}`, `web` absent without a web intake),
//! its writing and its reading.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The file's name inside the data dir.
pub const FILE: &str = "endpoints.json";

/// How often [`Endpoints::wait`] looks for the file.
const POLL: Duration = Duration::from_millis(20);

/// Where a running barrage listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The SMTP intake.
    pub smtp: SocketAddr,
    /// The private handover and operations API.
    pub http: SocketAddr,
    /// The public web intake; `None` when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<SocketAddr>,
    /// The process serving them.
    pub pid: u32,
}

impl Endpoints {
    /// The handover API's base URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The path of the file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Writes the file into `data_dir` atomically (a temporary file renamed over it), so a
    /// reader never sees half of it.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let temporary = data_dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_string(self).expect("endpoints serialize");
        std::fs::write(&temporary, text)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads the file of `data_dir`; `Ok(None)` when there is none (barrage is not listening).
    pub fn read(data_dir: &Path) -> anyhow::Result<Option<Endpoints>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let endpoints = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a barrage endpoints file", path.display()))?;
        Ok(Some(endpoints))
    }

    /// Removes the file (barrage stopped listening); a missing file is no error.
    pub fn remove(data_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(data_dir));
    }

    /// Waits until the file of `data_dir` appears and returns it. `alive` is asked on every look
    /// and ends the wait with its error (the process exited); after `limit` the wait fails too.
    pub fn wait(
        data_dir: &Path,
        limit: Duration,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Endpoints> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(endpoints) = Self::read(data_dir)? {
                return Ok(endpoints);
            }
            alive()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "barrage wrote no {} within {limit:?}: it did not start listening (see its log)",
                Self::path(data_dir).display()
            );
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_endpoints_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Endpoints::read(dir.path()).unwrap(), None);
        let endpoints = Endpoints {
            smtp: "127.0.0.1:2525".parse().unwrap(),
            http: "127.0.0.1:8025".parse().unwrap(),
            web: None,
            pid: 7,
        };
        endpoints.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(Endpoints::path(dir.path())).unwrap();
        assert_eq!(
            text,
            r#"{"smtp":"127.0.0.1:2525","http":"127.0.0.1:8025","pid":7}"#
        );
        let waited = Endpoints::wait(dir.path(), Duration::from_secs(1), || Ok(())).unwrap();
        assert_eq!(waited, endpoints);
        Endpoints::remove(dir.path());
        let error = Endpoints::wait(dir.path(), Duration::ZERO, || Ok(())).unwrap_err();
        assert!(
            error.to_string().contains("did not start listening"),
            "{error}"
        );
    }
}
