//! What booking-api erases as visits age (docs/architecture.md, "Privacy"): the PIN of a visit
//! that ended `CONNECX__RETENTION__PIN_DAYS` ago, and the visitor's name and email once it ended
//! `CONNECX__RETENTION__PERSONAL_DAYS` ago — in the bookings and in events still in the outbox.
//! [`platform::retention`] runs it.

use platform::retention::{Cutoffs, Erased, Eraser, Scrub, scrub, visit_ended_at};
use sqlx::PgConnection;

pub struct BookingEraser;

impl Eraser for BookingEraser {
    async fn erase(&self, tx: &mut PgConnection, cutoffs: Cutoffs) -> Result<Erased, sqlx::Error> {
        let pins = sqlx::query(
            "UPDATE visitor_bookings SET access_pin = NULL
              WHERE access_pin IS NOT NULL AND ends_at < $1",
        )
        .bind(cutoffs.pins_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut personal = sqlx::query(
            "UPDATE visitor_bookings SET visitor_name = '', visitor_email = ''
              WHERE ends_at < $1 AND (visitor_name <> '' OR visitor_email <> '')",
        )
        .bind(cutoffs.personal_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Events still held (unsent or parked; sent ones are deleted after the outbox's own
        // retention) carry the visitor too.
        let held: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, envelope FROM outbox
              WHERE envelope #>> '{data,visitor,email}' <> ''
                AND (envelope #>> '{data,window,ends_at}')::timestamptz < $1",
        )
        .bind(cutoffs.personal_before)
        .fetch_all(&mut *tx)
        .await?;
        for (id, mut envelope) in held {
            let ended = visit_ended_at(&envelope).is_some_and(|t| t < cutoffs.personal_before);
            let what = Scrub {
                pins: false,
                personal: true,
            };
            if ended && scrub(&mut envelope, what) {
                sqlx::query("UPDATE outbox SET envelope = $2 WHERE id = $1")
                    .bind(id)
                    .bind(&envelope)
                    .execute(&mut *tx)
                    .await?;
                personal += 1;
            }
        }
        Ok(Erased { pins, personal })
    }
}
