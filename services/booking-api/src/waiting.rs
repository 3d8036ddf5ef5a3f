//! `Prefer: wait=N`: hold a creation's answer until the booking's access outcome is known, or
//! N seconds pass (docs/architecture.md, "Services and what each owns"). The results consumer NOTIFYs after applying a result; every
//! replica hears it (see [`crate::pg_notify`]), so the request waits correctly whichever
//! replica took it. The state is read after subscribing, so a result landing in between is not
//! missed.

use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::pg_notify::{AccessChanged, PgNotifyHub};

/// Reloads the booking with `load` until `still_pending` says no, `wait` passes or `shutdown`.
/// Returns the last state read.
pub async fn while_pending<T, F, Fut>(
    pg_notify: &PgNotifyHub,
    shutdown: &CancellationToken,
    booking_id: Uuid,
    wait: Duration,
    load: F,
    still_pending: impl Fn(&T) -> bool,
) -> Result<T, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = pg_notify.subscribe_access();
    loop {
        let current = load().await?;
        if !still_pending(&current) {
            return Ok(current);
        }
        // Wait for a change of this booking (or a resync); other bookings' changes are skipped.
        let woke = loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break false,
                () = shutdown.cancelled() => break false,
                change = changes.recv() => match change {
                    Ok(AccessChanged::Booking(id)) if id == booking_id => break true,
                    Ok(AccessChanged::Resync) | Err(RecvError::Lagged(_)) => break true,
                    Ok(AccessChanged::Booking(_)) => continue,
                    Err(RecvError::Closed) => break false,
                }
            }
        };
        if !woke {
            return load().await;
        }
    }
}
