//! PostgreSQL LISTEN/NOTIFY (not the notifier's emails): the process listens on one connection
//! and passes each NOTIFY on to whoever inside it waits for one.
//!
//! One channel, `booking_access`: a result changed a booking's access, so requests waiting with
//! `Prefer: wait` re-read it. NOTIFY is sent inside the writing transaction, so it is delivered
//! only on commit, and it reaches every replica listening on the database, so a request waits
//! correctly whichever replica applied the result. A NOTIFY sent while the listening connection
//! was down is lost; after reconnecting the hub tells everyone to re-read (`Resync`). (The outbox's
//! relay is woken in process instead: `outbox::RelayWake`.)

use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};
use sqlx::{PgConnection, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ACCESS_CHANNEL: &str = "booking_access";

/// A change of some booking's access outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessChanged {
    Booking(Uuid),
    /// A NOTIFY may have been missed: re-read whatever you wait for.
    Resync,
}

/// The process's one listener on the NOTIFY channels, and what it wakes. Cheap to clone.
#[derive(Clone)]
pub struct PgNotifyHub {
    access: broadcast::Sender<AccessChanged>,
}

impl Default for PgNotifyHub {
    fn default() -> Self {
        Self::new()
    }
}

impl PgNotifyHub {
    pub fn new() -> Self {
        let (access, _) = broadcast::channel(1024);
        Self { access }
    }

    /// Access changes from now on. Subscribe *before* reading the state you wait on.
    pub fn subscribe_access(&self) -> broadcast::Receiver<AccessChanged> {
        self.access.subscribe()
    }

    fn resync(&self) {
        let _ = self.access.send(AccessChanged::Resync);
    }

    /// The listener listens on [`ACCESS_CHANNEL`] alone, so every notification is an access change.
    fn dispatch(&self, notification: &PgNotification) {
        let change = Uuid::parse_str(notification.payload())
            .map(AccessChanged::Booking)
            .unwrap_or(AccessChanged::Resync);
        // No receiver is fine: nobody is waiting.
        let _ = self.access.send(change);
    }

    /// Listens until `shutdown`, reconnecting after failures.
    pub async fn run_listener(self, pool: PgPool, shutdown: CancellationToken) {
        loop {
            match listen(&pool).await {
                Ok(mut listener) => {
                    tracing::debug!("listening for booking notifications");
                    self.resync();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            received = listener.try_recv() => match received {
                                Ok(Some(notification)) => self.dispatch(&notification),
                                // Lost and reconnecting: whatever came meanwhile is gone.
                                Ok(None) => self.resync(),
                                Err(sqlx::Error::PoolClosed) => return,
                                Err(error) => {
                                    tracing::warn!(%error, "notification listener failed; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => tracing::warn!(%error, "cannot listen for notifications; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ACCESS_CHANNEL).await?;
    Ok(listener)
}

/// Inside a writing transaction: wake whoever waits on `booking_id`'s access once it commits.
pub async fn notify_access(conn: &mut PgConnection, booking_id: Uuid) -> Result<(), sqlx::Error> {
    notify_access_of(conn, &[booking_id]).await
}

/// [`notify_access`] for several bookings in one statement.
pub async fn notify_access_of(
    conn: &mut PgConnection,
    booking_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id")
        .bind(ACCESS_CHANNEL)
        .bind(booking_ids)
        .execute(conn)
        .await?;
    Ok(())
}
