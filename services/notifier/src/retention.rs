//! What the notifier erases as visits age (docs/architecture.md, "Privacy"): PINs in the results
//! it keeps (booking snapshots) and in dead letters, `CONNECX__RETENTION__PIN_DAYS` after the
//! visit ended; the visitor's name and email there, and the addresses it mailed (`sent_mail`),
//! after `CONNECX__RETENTION__PERSONAL_DAYS`. [`platform::retention`] runs it.

use chrono::{DateTime, Utc};
use platform::retention::{Cutoffs, Erased, Eraser, Scrub, scrub, visit_ended_at};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct NotifierEraser;

impl Eraser for NotifierEraser {
    async fn erase(&self, tx: &mut PgConnection, cutoffs: Cutoffs) -> Result<Erased, sqlx::Error> {
        let pins = sqlx::query(
            "UPDATE booking_snapshots SET envelope = jsonb_set(envelope, '{data,pin}', 'null')
              WHERE envelope #>> '{data,pin}' IS NOT NULL
                AND (envelope #>> '{data,booking,window,ends_at}')::timestamptz < $1",
        )
        .bind(cutoffs.pins_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut personal = sqlx::query(
            "UPDATE booking_snapshots
                SET envelope = jsonb_set(envelope, '{data,booking,visitor}', '{\"name\": \"\", \"email\": \"\"}')
              WHERE envelope #>> '{data,booking,visitor,email}' <> ''
                AND (envelope #>> '{data,booking,window,ends_at}')::timestamptz < $1",
        )
        .bind(cutoffs.personal_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        personal += sqlx::query("DELETE FROM sent_mail WHERE at < $1")
            .bind(cutoffs.personal_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let (letter_pins, letter_personal) = erase_from_dead_letters(tx, cutoffs).await?;
        Ok(Erased {
            pins: pins + letter_pins,
            personal: personal + letter_personal,
        })
    }
}

/// Dead letters are few (each one is an alert); those that may hold a PIN or a visitor are read
/// and scrubbed by the end of their visit (or, when the body does not say, by when they came).
async fn erase_from_dead_letters(
    tx: &mut PgConnection,
    cutoffs: Cutoffs,
) -> Result<(u64, u64), sqlx::Error> {
    let letters: Vec<(Uuid, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, body, received_at FROM dead_letters
          WHERE position('\"pin\":\"'::bytea IN body) > 0
             OR (position('\"visitor\"'::bytea IN body) > 0 AND received_at < $1)",
    )
    .bind(cutoffs.pins_before)
    .fetch_all(&mut *tx)
    .await?;
    let (mut pins, mut personal) = (0, 0);
    for (id, body, received_at) in letters {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let ended = visit_ended_at(&value).unwrap_or(received_at);
        let what = Scrub {
            pins: ended < cutoffs.pins_before,
            personal: ended < cutoffs.personal_before,
        };
        if !(what.pins || what.personal) || !scrub(&mut value, what) {
            continue;
        }
        let body = serde_json::to_vec(&value).unwrap_or(body);
        sqlx::query("UPDATE dead_letters SET body = $2 WHERE id = $1")
            .bind(id)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        pins += u64::from(what.pins);
        personal += u64::from(what.personal);
    }
    Ok((pins, personal))
}
