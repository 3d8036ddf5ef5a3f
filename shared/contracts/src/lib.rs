//! The messages the connecX access-integration services exchange, and the names they meet under.
//!
//! Everything that crosses between two services is defined here once: the event envelope, every
//! event's payload (a full snapshot, so a consumer never has to call its producer back), the
//! routing keys, the exchanges, the queues, the headers the worker runtime writes, and what each
//! service may do on the broker. No I/O.

pub mod connections;
pub mod events;
pub mod permissions;
pub mod topology;

pub use connections::*;
pub use events::*;
pub use permissions::*;
pub use topology::*;
