//! The wire vocabulary every layer shares: SSE framing and HTTP chunks (`encode`, pure, with
//! its invariant in its header) and every frame the server writes on a stream (`frame`, one
//! typed enum; the presence data in `presence`). Header names and grammar are `crate::headers`. Nothing here knows about
//! sockets, config or state.

pub mod encode;
pub mod frame;
pub mod presence;

pub use frame::{Control, Frame, Hello, Receipt, ReceiptOutcome, ResetReason};
pub use presence::{PresenceCount, PresenceMember, PresenceSnapshot, PresenceUpdate};
