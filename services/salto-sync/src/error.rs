//! Why making Salto match the ledger did not complete, and what the worker runtime does about it:
//! wait (the server is down, busy, or out of timetable IDs), retry (a transient failure), or give
//! up with a dead letter (a failure no retry changes). Salto's refusals that a person must
//! resolve are told apart here too, so the handler can fail the booking with Salto's answer.

use platform::amqp::{HandlerError, PublishError};
use salto_ship::{Remedy, ShipError};

use crate::servers::ServerError;

/// Why a ledger transaction, a sweep or a clearing did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Ship(#[from] ShipError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publishing results: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Every timetable ID of the server is in use: the booking waits until one frees.
    #[error("every Salto timetable ID (1..1024) of server {server} is in use")]
    PoolExhausted { server: String },
    /// The building's server cannot take the booking now (its breaker is open, or it has enough
    /// messages in flight): the booking waits without using up its retries.
    #[error(transparent)]
    Unavailable(#[from] platform::bulkhead::Refusal),
    /// A call failed while the server's breaker is open: the server is down, the booking waits.
    #[error("the Salto server is down: {0}")]
    ServerDown(String),
    /// The booking was made under a version of its building's connection this worker has not
    /// seen yet; the change is on its way through the same queue.
    #[error(
        "the booking was made under version {wanted} of building {building}'s Salto connection; \
         this worker has version {known} so far"
    )]
    AwaitingConnection {
        building: String,
        wanted: i64,
        known: i64,
    },
    #[error("{0}")]
    Bug(String),
}

impl From<platform::snapshots::SnapshotError> for SyncError {
    fn from(error: platform::snapshots::SnapshotError) -> Self {
        match error {
            platform::snapshots::SnapshotError::Db(e) => Self::Db(e),
            // Not for retrying: a dead letter, and the alert, name the booking.
            undecodable => Self::Bug(undecodable.to_string()),
        }
    }
}

impl SyncError {
    /// Salto's refusal that a person must resolve, if that is what this is.
    pub fn needs_manager(&self) -> Option<&ShipError> {
        match self {
            Self::Ship(error) if error.remedy() == Remedy::NeedsManager => Some(error),
            _ => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ship(error) => error.remedy() == Remedy::Transient,
            Self::Db(_)
            | Self::Publish(_)
            | Self::PoolExhausted { .. }
            | Self::Unavailable(_)
            | Self::ServerDown(_)
            | Self::AwaitingConnection { .. } => true,
            // Ops can fix a key and restart; the message waits meanwhile.
            Self::Server(ServerError::Secret { .. }) => true,
            Self::Server(_) | Self::Bug(_) => false,
        }
    }

    pub fn into_handler_error(self) -> HandlerError {
        if let Self::PoolExhausted { .. } | Self::Unavailable(_) | Self::ServerDown(_) = self {
            // Nothing is wrong with the booking: it waits for an ID, however long that takes.
            return HandlerError::Unavailable(self.to_string());
        }
        if self.is_transient() {
            HandlerError::Transient(self.to_string())
        } else {
            HandlerError::Permanent(self.to_string())
        }
    }
}
