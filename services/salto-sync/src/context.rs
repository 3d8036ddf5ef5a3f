//! What the handler, the cleaner and every ledger transaction share: the database pools, the Salto
//! servers' clients, the timetable sweeper, the publisher and the clock. Built once at start
//! ([`crate::startup`]) and cloned cheaply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use chrono_tz::Tz;
use platform::amqp::Publisher;
use platform::clock::Clock;
use sqlx::PgPool;

use crate::servers::Servers;
use crate::store;
use crate::timetables::Sweeper;

#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// A small pool of its own for the notes a ledger transaction commits outside itself
    /// (`unrecorded_writes`). A transaction asks for it while it holds a connection of `pool`:
    /// from the same pool, transactions holding every connection would wait on each other until
    /// the acquire timeout.
    pub journal: PgPool,
    /// Every Salto server's SHIP client.
    pub servers: Arc<Servers>,
    /// Deletes the timetables no permission uses any more, per server, after transactions that
    /// may have stopped using one.
    pub sweeper: Arc<Sweeper>,
    pub publisher: Publisher,
    pub clock: Arc<dyn Clock>,
    /// The buildings (and their time zones) this process has written to `buildings`, so that a
    /// booking of a building already known costs no statement.
    pub buildings_remembered: Arc<Mutex<HashMap<String, String>>>,
}

impl Context {
    /// Makes sure the nightly clearing knows `building` and its time zone. Rows of `buildings`
    /// are never deleted, so what this process wrote once stays written.
    pub async fn remember_building(
        &self,
        building: &str,
        timezone: &str,
    ) -> Result<(), sqlx::Error> {
        let known = self
            .buildings_remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(building)
            .is_some_and(|known| known == timezone);
        if known {
            return Ok(());
        }
        // Outside any transaction: the row lock of this upsert must not serialize a building's
        // transactions.
        let mut conn = self.pool.acquire().await?;
        store::bookings::remember_building(&mut conn, building, timezone).await?;
        self.buildings_remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(building.to_owned(), timezone.to_owned());
        Ok(())
    }

    /// The building's local date now.
    pub fn local_today(&self, timezone: &str) -> NaiveDate {
        let now = self.clock.now();
        match timezone.parse::<Tz>() {
            Ok(tz) => now.with_timezone(&tz).date_naive(),
            Err(_) => {
                tracing::warn!(timezone, "unknown time zone; using UTC dates");
                now.date_naive()
            }
        }
    }
}
