//! What the handler, the cleaner and every ledger transaction share: the database pools, the Salto
//! servers' clients, the timetable sweeper, the publisher and the clock. Built once at start
//! ([`crate::startup`]) and cloned cheaply.

use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use platform::amqp::Publisher;
use platform::clock::Clock;
use sqlx::PgPool;

use crate::servers::Servers;
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
}

impl Context {
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
