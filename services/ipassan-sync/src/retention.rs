//! What ipassan-sync erases as visits age (docs/architecture.md, "Privacy"): the visitor's name
//! and email in its booking snapshots once the visit ended `CONNECX__RETENTION__PERSONAL_DAYS`
//! ago. It keeps no PIN. [`platform::retention`] runs it.

use platform::retention::{Cutoffs, Erased, Eraser};
use sqlx::PgConnection;

pub struct SnapshotEraser;

impl Eraser for SnapshotEraser {
    async fn erase(&self, tx: &mut PgConnection, cutoffs: Cutoffs) -> Result<Erased, sqlx::Error> {
        let personal = sqlx::query(
            "UPDATE booking_snapshots
                SET envelope = jsonb_set(envelope, '{data,visitor}', '{\"name\": \"\", \"email\": \"\"}')
              WHERE envelope #>> '{data,visitor,email}' <> ''
                AND (envelope #>> '{data,window,ends_at}')::timestamptz < $1",
        )
        .bind(cutoffs.personal_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(Erased { pins: 0, personal })
    }
}
