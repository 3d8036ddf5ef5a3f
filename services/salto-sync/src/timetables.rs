//! The timetable pool of each Salto server: one timetable per interval set, created on demand
//! through SHIP and reused by every permission with the same hours; deleted again once no
//! permission uses it, so the server's 1024 IDs never run out under reschedules. A booking's
//! Period already fixes its date, so a pool timetable holds its hours on every weekday.
//!
//! Creation is serialized per server by an advisory lock, taken after the access level's lock
//! (always in that order, so the two cannot deadlock). An ID Salto already uses is adopted when
//! it holds the same intervals (an earlier creation of ours whose ledger row was rolled back) and
//! skipped otherwise (someone else's timetable).
//!
//! Deletion ([`Sweeper`]) runs in its own transaction after the ledger transactions that may have
//! stopped using a timetable. A ledger transaction share-locks the pool row of every timetable it
//! is about to use, and the sweep skips locked rows and checks the ledger again after locking, so
//! it never deletes a timetable a permission is being written with. When the pool is full anyway,
//! the booking waits (a transient error) and ops get one alert naming the server. The pool's rows
//! are kept by [`crate::store::timetables`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::error::SyncError;
use crate::servers::Servers;
use crate::store;
use salto_ship::{DaySeconds, Interval, ShipClient, Timetable, format_day_time};

/// A server's timetable pool: IDs 1 to this (SHIP's limit).
pub const MAX_ID: u32 = 1024;
/// The shortest pause between two sweeps of one server.
const SWEEP_PAUSE: Duration = Duration::from_millis(500);

fn pool_lock(server: &str) -> String {
    format!("salto_sync/timetable_pool/{server}")
}

/// The pool's key for an interval set.
pub fn interval_key(starts: DaySeconds, ends: DaySeconds) -> String {
    format!("{}-{}", format_day_time(starts), format_day_time(ends))
}

fn every_day(starts: DaySeconds, ends: DaySeconds) -> Interval {
    Interval {
        start: starts,
        end: ends,
        days: [true; 7],
    }
}

/// The ID of `server`'s pool timetable for these hours, creating it in Salto when it does not
/// exist. The pool row stays share-locked until the caller's transaction ends. IDs found taken
/// by someone else are noted through `journal`, committed at once: they stay taken whether or
/// not the caller's transaction commits.
pub async fn timetable_for(
    conn: &mut PgConnection,
    journal: &PgPool,
    ship: &ShipClient,
    server: &str,
    starts: DaySeconds,
    ends: DaySeconds,
) -> Result<u32, SyncError> {
    let key = interval_key(starts, ends);
    if let Some(id) = store::timetables::for_key(conn, server, &key).await? {
        return Ok(id);
    }
    store::lock(conn, &pool_lock(server)).await?;
    if let Some(id) = store::timetables::for_key(conn, server, &key).await? {
        return Ok(id);
    }
    let taken = store::timetables::taken_ids(conn, server).await?;
    let wanted = vec![every_day(starts, ends)];
    for id in (1..=MAX_ID).filter(|id| !taken.contains(id)) {
        let timetable = Timetable {
            id,
            name: format!("connecX {key}"),
            intervals: wanted.clone(),
        };
        match ship.insert_timetable(&timetable).await {
            Ok(()) => {
                store::timetables::record(conn, server, id, Some(&key)).await?;
                return Ok(id);
            }
            Err(error) if error.code() == Some(10) => {
                let existing = ship.read_timetable(id).await?;
                if existing.intervals == wanted {
                    store::timetables::record(conn, server, id, Some(&key)).await?;
                    return Ok(id);
                }
                let mut noted = journal.acquire().await?;
                store::timetables::record(&mut noted, server, id, None).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(SyncError::PoolExhausted {
        server: server.to_owned(),
    })
}

/// Deletes the timetables of a server that no permission uses any more, in the background,
/// at most one sweep of a server at a time (a request while one runs makes it run once more).
pub struct Sweeper {
    pool: PgPool,
    servers: Arc<Servers>,
    /// Servers being swept, and whether another sweep was asked for meanwhile.
    running: Mutex<HashMap<String, bool>>,
}

impl Sweeper {
    pub fn new(pool: PgPool, servers: Arc<Servers>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            servers,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Asks for a sweep of `server` soon.
    pub fn request(self: &Arc<Self>, server: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = running.get_mut(server) {
            *again = true;
            return;
        }
        running.insert(server.to_owned(), false);
        let sweeper = Arc::clone(self);
        let server = server.to_owned();
        tokio::spawn(async move { sweeper.keep_sweeping(server).await });
    }

    async fn keep_sweeping(self: Arc<Self>, server: String) {
        loop {
            match self.sweep(&server).await {
                Ok(0) => {}
                Ok(freed) => tracing::info!(server, freed, "unused Salto timetables deleted"),
                Err(error) => tracing::warn!(server, %error, "sweeping unused timetables failed"),
            }
            tokio::time::sleep(SWEEP_PAUSE).await;
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.get(&server).copied().unwrap_or(false) {
                running.insert(server.clone(), false);
            } else {
                running.remove(&server);
                return;
            }
        }
    }

    /// One sweep of `server` now: deletes its unused timetables in Salto and forgets them.
    /// Returns how many IDs it freed.
    pub async fn sweep(&self, server: &str) -> Result<usize, SyncError> {
        let mut tx = self.pool.begin().await?;
        let unused = store::timetables::lock_unused(&mut tx, server).await?;
        if unused.is_empty() {
            return Ok(0);
        }
        let ship = self
            .servers
            .client_reading::<SyncError>(&mut tx, server)
            .await?;
        let mut freed = 0;
        for id in unused {
            match ship.delete_timetable(id).await {
                // Gone already counts as deleted.
                Ok(()) => {}
                Err(error) if error.code() == Some(11) => {}
                // A permission connecX does not own (made by hand) still uses it.
                Err(error) if error.code() == Some(7) => {
                    tracing::info!(server, timetable = id, %error, "Salto keeps a timetable still in use");
                    store::timetables::delete_refused(&mut tx, server, id).await?;
                    continue;
                }
                Err(error) => {
                    // Keep what was deleted so far; the next sweep goes on.
                    tracing::warn!(server, timetable = id, %error, "deleting a timetable failed");
                    break;
                }
            }
            store::timetables::forget(&mut tx, server, id).await?;
            freed += 1;
        }
        if freed > 0 {
            store::timetables::pool_has_room(&mut tx, server).await?;
        }
        tx.commit().await?;
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_hours() {
        assert_eq!(interval_key(18 * 3600, 24 * 3600), "18:00:00-24:00:00");
    }
}
