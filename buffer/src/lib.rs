//! barrage: a durable FIFO intake buffer for one-shot request floods.
//!
//! Requests come in through an intake ([`intake`], on the [`smtp`] server), are validated
//! ([`form`]), made durable in FIFO order by the [`journal`], and handed to the registration system
//! through the handover [`api`]; [`ack`] sends the acknowledgement mails. [`server`] wires them
//! together, [`config`] holds the settings, [`cli`] is the command line and [`notify`] tells a
//! service manager (systemd) when barrage is ready, stopping and alive. Two formats have
//! their one definition here: [`endpoints`] (where a running barrage listens) and [`prometheus`]
//! (the `/metrics` text).
//!
//! Layers, each pointing only down: `cli` → `server` → `config` → `ack` → `api` → `intake` →
//! `smtp`, `form`, `journal` (which holds the ack outbox types, in `journal::outbox`); `anvil`
//! (per-client limits, shared by the SMTP server and the web intake) sits below `smtp`;
//! `endpoints`, `prometheus` and `descriptors` (file-descriptor limits, accept failures) sit
//! below them all. [`signing`] (the key that signs checkpoints and receipts) sits below `ack` and
//! `api`; [`audit`] (`barrage audit`, reading a journal's file) is used by `cli` only.

pub mod ack;
pub mod anvil;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod endpoints;
pub mod form;
pub mod intake;
pub mod journal;
pub mod notify;
pub mod prometheus;
pub mod server;
pub mod signing;
pub mod smtp;
pub mod tls;
