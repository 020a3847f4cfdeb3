//! The ack outbox as the sender sees it. The types live with the journal
//! ([`crate::journal::outbox`]), which writes the rows; they are re-exported here under the path
//! the ack code and its users have always named them by.

pub use crate::journal::outbox::{AckCounts, AckMark, AckOutbox, PendingAck};
