//! The run folder as a whole, above the drivers that write into it: claiming a folder for one run
//! ([`folder`]: a lock while a landrush uses it, no silent overwrite of another run's records),
//! where a shard's records come from ([`provenance`]: host, clock, scenario digest), one file to
//! send a shard back in ([`bundle`]) and combining the folders of a scenario's shards ([`merge`]).
//! The record formats themselves are `reports::records` (contract: Run records).

pub mod bundle;
pub mod folder;
pub mod merge;
pub mod provenance;
