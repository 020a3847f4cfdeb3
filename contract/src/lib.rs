//! The contract's data: what every part of the harness reads and writes, and nothing that acts.
//!
//! `landrush` (drivers, observers, checkers) writes these shapes, `reports` renders them, and both
//! depend on this crate rather than on each other. It owns:
//!
//! - [`records`]: the run-record files of a run folder (contract: Run records);
//! - [`chain`]: the journal's hash chain (contract: Provable order);
//! - [`checks`]: the checkers' results and the run's [`checks::Verdict`] (contract: Verdicts);
//! - [`utc`]: the one RFC 3339 microsecond format every record and reply uses;
//! - [`histogram`]: the one latency histogram shape, so shards and reports can add them up.

pub mod chain;
pub mod checks;
pub mod histogram;
pub mod records;
pub mod utc;

pub use checks::Verdict;
