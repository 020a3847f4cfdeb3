//! landrush: replays landrush scenarios against an intake buffer and verifies the contract
//! (docs/contract.md): FIFO order, zero loss, one ack per request.
//!
//! The layers, each using only those above it in this list (no module uses one further down):
//!
//! 0. [`clock`]: a machine's clock offset against a reference — from the buffer's replies or a
//!    time endpoint's exchange (above nothing but the record formats).
//! 1. [`scenario`]: the scenario language — what a `scenarios/*.toml` file says (faults
//!    included), its checks, the seeded hash every choice comes from.
//! 2. [`schedule`]: what a scenario sends — the plan (due times, clients, hot slots), each request
//!    and its mail, shards, and [`schedule::ValidScenario`], the checked scenario every later
//!    layer takes as given.
//! 3. [`driver`]: playing a scenario — the SMTP driver and the HTTP driver, the recorder of
//!    `sent.jsonl` and the histograms, `run.json`.
//! 4. [`observe`]: the registry side — the fake registry pulling the handover API, the ack sink,
//!    the SMTP and Maildir handover observers.
//! 5. [`records`]: a run folder as a whole — claiming it for one run (a lock, no silent
//!    overwrite), merging shards.
//! 6. [`check`]: the checkers of the contract over a run folder's records; [`audit`]: the
//!    verification of a buffer's hash chain and signed checkpoints from the outside.
//! 7. [`rehearse`] and [`fsync_audit`]: whole rehearsals (the buffer as a child process, faults,
//!    the drain, checks and reports) and the fsync audit under strace.
//! 8. [`gate`]: the CI gate's thresholds and their judgement.
//! 9. [`cli`]: the command line, one module per subcommand.

pub mod clock;
pub mod scenario;
pub mod schedule;

pub mod driver;
pub mod observe;
pub mod records;

pub mod audit;
pub mod check;

pub mod fsync_audit;
pub mod rehearse;

pub mod gate;

pub mod cli;
