//! The run folder as a whole, above the drivers that write into it: claiming a folder for one run
//! ([`folder`]: a lock while a landrush uses it, no silent overwrite of another run's records) and
//! combining the folders of a scenario's shards ([`merge`]). The record formats themselves are
//! `reports::records` (contract: Run records).

pub mod folder;
pub mod merge;
