//! The stages as deterministic functions of (state, input) → (state changes, outputs).
//! Drivers in `runtime` feed them from files or Kafka and persist what they return.

pub mod engine;
pub mod ledger;
pub mod pending;
pub mod privacy;
pub mod records;
pub mod reorder;
pub mod windows;

pub use engine::Engine;
pub use privacy::UserHasher;
pub use records::{
    Billed, ConversationBilled, ConversationOpened, MessageCharged, MessageDelivered, RejectClass, Rejected, Unit,
};
