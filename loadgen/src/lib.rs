//! landrush: replays landrush scenarios against an intake buffer and verifies the contract of
//! DESIGN.md (FIFO, zero loss, one ack per request).
pub mod check;
pub mod commands;

pub mod driver;
pub mod faults;
pub mod fsync_audit;
pub mod gate;
pub mod http_driver;
pub mod merge;
pub mod observe;
pub mod rehearse;
pub mod scenario;
pub mod schedule;
pub mod shard;
