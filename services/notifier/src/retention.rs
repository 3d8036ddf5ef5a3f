//! What the notifier erases as visits age (docs/architecture.md, "Privacy"): PINs in the results
//! it keeps (booking snapshots) and in dead letters, `CONNECX__RETENTION__PIN_DAYS` after the
//! visit ended; the visitor's name and email there, and the addresses it mailed (`sent_mail`),
//! after `CONNECX__RETENTION__PERSONAL_DAYS`. [`platform::retention`] runs it; the statements
//! are in [`crate::store`].

use platform::retention::{Cutoffs, Erased, Eraser, Scrub, scrub, visit_ended_at};
use sqlx::PgConnection;

use crate::store::{self, Erasure};

pub struct NotifierEraser;

impl Eraser for NotifierEraser {
    async fn erase(&self, tx: &mut PgConnection, cutoffs: Cutoffs) -> Result<Erased, sqlx::Error> {
        let pins = store::erase(tx, Erasure::ResultPins, cutoffs.pins_before).await?;
        let personal = store::erase(tx, Erasure::ResultVisitors, cutoffs.personal_before).await?
            + store::erase(tx, Erasure::MailRecipients, cutoffs.personal_before).await?;
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
    let letters = store::dead_letters_naming_visits(tx, cutoffs.pins_before).await?;
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
        store::replace_dead_letter_body(tx, id, &body).await?;
        pins += u64::from(what.pins);
        personal += u64::from(what.personal);
    }
    Ok((pins, personal))
}
