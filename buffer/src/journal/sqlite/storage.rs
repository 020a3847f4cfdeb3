//! What the journal admits: a free-space reserve on the data dir's filesystem and an optional
//! bound on the queue (requests not yet handed over). A request refused here is refused before
//! its data is read (`452 4.3.1` at MAIL FROM, `507` on the web), so the disk never fills up
//! under a flood and what was accepted stays writable (contract: Refusals).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::journal::Refusal;

/// The storage bounds; see `[storage]` in `buffer/barrage.example.toml`.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Keep at least this much free (bytes) …
    pub min_free_bytes: u64,
    /// … or this share of the filesystem, whichever is smaller; both 0: no reserve.
    pub min_free_percent: f64,
    /// Most requests accepted and not yet handed over; 0: no bound.
    pub max_queue_depth: u64,
    /// The WAL file's size (bytes): filled with zeros to it when the journal opens, and
    /// emptied when idle only once it outgrew it (see `journal/sqlite/wal.rs`).
    pub wal_size_limit: u64,
    /// A page of the handover API stops after this many bytes (at least one row).
    pub page_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            min_free_bytes: 1024 * 1024 * 1024,
            min_free_percent: 5.0,
            max_queue_depth: 0,
            wal_size_limit: 64 * 1024 * 1024,
            page_bytes: 1024 * 1024,
        }
    }
}

/// The reserve check on one open directory.
pub struct Admission {
    dir: File,
    options: StorageOptions,
}

const MIB: u64 = 1024 * 1024;

impl Admission {
    pub fn new(dir: &Path, options: StorageOptions) -> std::io::Result<Self> {
        Ok(Admission {
            dir: File::open(dir)?,
            options,
        })
    }

    /// Bytes available to barrage and the filesystem's size.
    // statvfs's field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    pub fn space(&self) -> std::io::Result<(u64, u64)> {
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: the descriptor is open for the life of `self`; statvfs only writes `stat`.
        let rc = unsafe { libc::fstatvfs(self.dir.as_raw_fd(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstatvfs returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        let unit = u64::from(stat.f_frsize);
        Ok((
            u64::from(stat.f_bavail).saturating_mul(unit),
            u64::from(stat.f_blocks).saturating_mul(unit),
        ))
    }

    /// Bytes free beyond the reserve; 0 when the filesystem cannot say.
    pub fn spare(&self) -> u64 {
        self.space()
            .map_or(0, |(free, total)| free.saturating_sub(self.reserve(total)))
    }

    pub fn page_bytes(&self) -> usize {
        self.options.page_bytes.max(1)
    }

    /// The reserve on a filesystem of `total` bytes.
    pub fn reserve(&self, total: u64) -> u64 {
        let share = (total as f64 * self.options.min_free_percent / 100.0) as u64;
        self.options.min_free_bytes.min(share)
    }

    /// Whether one more request may come in with `queue_depth` waiting.
    pub fn check(&self, queue_depth: u64) -> Result<(), Refusal> {
        let max = self.options.max_queue_depth;
        if max > 0 && queue_depth >= max {
            return Err(Refusal::QueueFull { depth: queue_depth });
        }
        // A filesystem that cannot say how full it is: the write itself will tell (451).
        let Ok((free, total)) = self.space() else {
            return Ok(());
        };
        let reserve = self.reserve(total);
        if reserve > 0 && free < reserve {
            return Err(Refusal::DiskReserve {
                free_mib: free / MIB,
                reserve_mib: reserve.div_ceil(MIB),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_the_smaller_of_bytes_and_share() {
        let dir = tempfile::tempdir().unwrap();
        let admission = Admission::new(dir.path(), StorageOptions::default()).unwrap();
        assert_eq!(admission.reserve(10 * MIB), MIB / 2);
        assert_eq!(admission.reserve(1024 * 1024 * MIB), 1024 * MIB);
    }

    #[test]
    fn a_full_queue_and_an_impossible_reserve_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = StorageOptions {
            max_queue_depth: 3,
            ..StorageOptions::default()
        };
        let admission = Admission::new(dir.path(), options).unwrap();
        assert!(admission.check(2).is_ok());
        assert!(matches!(
            admission.check(3),
            Err(Refusal::QueueFull { depth: 3 })
        ));
        let options = StorageOptions {
            min_free_bytes: u64::MAX,
            min_free_percent: 100.0,
            ..StorageOptions::default()
        };
        let admission = Admission::new(dir.path(), options).unwrap();
        let (free, total) = admission.space().unwrap();
        assert!(
            free < total,
            "a filesystem in use has less free than its size"
        );
        assert!(matches!(
            admission.check(0),
            Err(Refusal::DiskReserve { .. })
        ));
    }
}
