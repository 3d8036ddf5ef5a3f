//! The timetable pool: one Salto timetable per interval set, created on demand through SHIP and
//! reused by every permission with the same hours. A booking's Period already fixes its date, so
//! a pool timetable holds its hours on every weekday.
//!
//! Creation is serialized by a pool-wide advisory lock, taken after the access level's lock (always
//! in that order, so the two cannot deadlock). An ID Salto already uses is adopted when it holds
//! the same intervals (an earlier creation of ours whose ledger row was rolled back) and skipped
//! otherwise (someone else's timetable).

use sqlx::PgConnection;

use crate::ledger::store;
use crate::step::StepError;
use salto_ship::{DaySeconds, Interval, ShipClient, Timetable, format_day_time};

const POOL_LOCK: &str = "salto_sync/timetable_pool";
const MAX_ID: u32 = 1024;

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

/// The ID of the pool timetable for these hours, creating it in Salto when it does not exist.
pub async fn timetable_for(
    conn: &mut PgConnection,
    ship: &ShipClient,
    starts: DaySeconds,
    ends: DaySeconds,
) -> Result<u32, StepError> {
    let key = interval_key(starts, ends);
    if let Some(id) = store::timetable_for_key(conn, &key).await? {
        return Ok(id);
    }
    store::lock(conn, POOL_LOCK).await?;
    if let Some(id) = store::timetable_for_key(conn, &key).await? {
        return Ok(id);
    }
    let taken = store::taken_timetable_ids(conn).await?;
    let wanted = vec![every_day(starts, ends)];
    for id in (1..=MAX_ID).filter(|id| !taken.contains(id)) {
        let timetable = Timetable {
            id,
            name: format!("connecX {key}"),
            intervals: wanted.clone(),
        };
        match ship.insert_timetable(&timetable).await {
            Ok(()) => {
                store::record_timetable(conn, id, Some(&key)).await?;
                return Ok(id);
            }
            Err(error) if error.code() == Some(10) => {
                let existing = ship.read_timetable(id).await?;
                if existing.intervals == wanted {
                    store::record_timetable(conn, id, Some(&key)).await?;
                    return Ok(id);
                }
                store::record_timetable(conn, id, None).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(StepError::Bug(format!(
        "every Salto timetable ID 1..{MAX_ID} is in use; none left for {key}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_hours() {
        assert_eq!(interval_key(18 * 3600, 24 * 3600), "18:00:00-24:00:00");
    }
}
