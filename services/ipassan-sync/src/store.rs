//! This worker's records in its `ipassan_sync` schema: the booking snapshots of the version rule
//! (written by `platform::snapshots`), `visitor_access` (what was last applied and published for
//! each booking, and in which tenant), and the buildings' own iPassan connections
//! (`building_connections`, `tenants`; see [`crate::tenants`]).
//!
//! A booking is handled under a transaction-scoped advisory lock, so two messages of one booking
//! (a retry and a newer version, on one replica or two) never talk to iPassan at the same time:
//! the second waits, then reads the stored latest snapshot and what the first did. The lock goes
//! with the transaction, so a handler that dies cannot leave it held.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Connection, PgConnection, PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use contracts::{Envelope, IpassanConnectionChange};

use crate::decision::{Applied, LastPublished};
use crate::tenants::{Tenant, tenant_key};
use ipassan_client::visit::VisitWindow;

/// Why the records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Not worth retrying: acting as if nothing were held would drop the booking silently.
    #[error("stored snapshot of booking {booking_id} cannot be read: {reason}")]
    Snapshot { booking_id: Uuid, reason: String },
}

/// Begins the transaction that handles `booking_ids` on `conn`, holding their locks, taken in
/// booking order so two batches never wait for each other in a circle. `BEGIN` and the locks go
/// to the server as one simple query: one round trip however many bookings, and one statement
/// for all the locks (a statement per lock cost PostgreSQL a parse, a plan and a result set
/// each). A function scan of an array yields its elements in the array's order, so the locks are
/// taken in the order the ids are sorted here (a UUID's text sorts as its bytes).
pub async fn lock_bookings<'c>(
    conn: &'c mut PgConnection,
    booking_ids: &[Uuid],
) -> Result<Transaction<'c, Postgres>, StoreError> {
    let mut ids = booking_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    // The keys are UUIDs' canonical text (hex digits and hyphens only), so the literals are
    // safe; the lock key is `hashtextextended('ipassan-sync:<id>', 0)` as before.
    let literals: Vec<String> = ids
        .iter()
        .map(|id| format!("'{}'", id.hyphenated()))
        .collect();
    let statement = format!(
        "BEGIN; SELECT count(pg_advisory_xact_lock(hashtextextended('ipassan-sync:' || id, 0))) \
           FROM unnest(ARRAY[{}]::text[]) AS id",
        literals.join(",")
    );
    Ok(conn.begin_with(sqlx::AssertSqlSafe(statement)).await?)
}

/// A building's own iPassan connection as this worker holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldConnection {
    pub version: i64,
    /// `(tenant key, site)`; `None` when the building is back on the default.
    pub tenant: Option<(String, String)>,
}

/// What the locked steps of `booking_ids` start from, by booking: the latest snapshot held (as
/// `platform::snapshots::latest`, on the locked connection), what was applied and published for
/// it so far, and the building's own connection — read in one query. A booking without a
/// snapshot is absent; one whose snapshot no longer decodes has its error.
pub async fn held_states(
    conn: &mut PgConnection,
    booking_ids: &[Uuid],
) -> Result<HashMap<Uuid, Result<HeldState, StoreError>>, StoreError> {
    let rows: Vec<HeldRow> = sqlx::query_as(
        "SELECT s.booking_id, s.envelope::text, a.applied_version, a.site, a.visitor_id,
                a.published, a.valid_from, a.valid_to, a.failure_code, a.tenant_key, c.version,
                c.tenant_key, c.site
           FROM booking_snapshots s
           LEFT JOIN visitor_access a ON a.booking_id = s.booking_id
           LEFT JOIN building_connections c
                  ON c.building_id = s.envelope->'data'->'building'->>'id'
          WHERE s.booking_id = ANY($1)",
    )
    .bind(booking_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.0, held_from_row(row)))
        .collect())
}

fn held_from_row(row: HeldRow) -> Result<HeldState, StoreError> {
    let (
        booking_id,
        body,
        version,
        site,
        visitor_id,
        published,
        valid_from,
        valid_to,
        failure_code,
        tenant,
        connection_version,
        connection_tenant,
        connection_site,
    ) = row;
    let envelope = serde_json::from_str(&body).map_err(|e| StoreError::Snapshot {
        booking_id,
        reason: e.to_string(),
    })?;
    // `applied_version` is NOT NULL in the table: NULL here means no row yet.
    let applied = version.map(|version| Applied {
        version,
        site,
        tenant: Tenant::from_stored(tenant.as_deref()),
        visitor_id,
        published: match (published.as_deref(), valid_from, valid_to) {
            (Some("granted" | "updated"), Some(from), Some(to)) => {
                LastPublished::Access(VisitWindow { from, to })
            }
            (Some("revoked"), _, _) => LastPublished::Revoked,
            (Some("failed"), _, _) => LastPublished::Failed(failure_code.unwrap_or_default()),
            _ => LastPublished::Nothing,
        },
    });
    let connection = connection_version.map(|version| HeldConnection {
        version,
        tenant: connection_tenant.zip(connection_site),
    });
    Ok(HeldState {
        latest: envelope,
        applied,
        connection,
    })
}

/// What [`held_states`] read for a booking.
#[derive(Debug)]
pub struct HeldState {
    pub latest: Envelope,
    pub applied: Option<Applied>,
    /// The building's own connection, if it ever had one.
    pub connection: Option<HeldConnection>,
}

type HeldRow = (
    Uuid,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// One booking's settled step, for [`save_applied`].
pub struct AppliedRow<'a> {
    pub booking_id: Uuid,
    pub applied: &'a Applied,
    /// The result type published by this step (`granted`, `updated`, …), if any.
    pub published_now: Option<&'a str>,
}

/// Records, for each row, that `applied.version` is settled with the result now on record —
/// unless a newer snapshot is held by now (it arrived while the step worked; its own message,
/// waiting for the lock, acts on it). One statement for all rows. Returns the bookings written;
/// a booking left out was superseded, and its step must not announce anything.
pub async fn save_applied(
    conn: &mut PgConnection,
    rows: &[AppliedRow<'_>],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut columns = AppliedColumns::default();
    for row in rows {
        columns.push(row);
    }
    let written: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO visitor_access
                (booking_id, applied_version, site, visitor_id, published, valid_from, valid_to,
                 failure_code, tenant_key)
         SELECT i.booking_id, i.applied_version, i.site, i.visitor_id, COALESCE(i.published, 'none'),
                i.valid_from, i.valid_to, i.failure_code, i.tenant_key
           FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                       $6::timestamp[], $7::timestamp[], $8::text[], $9::text[])
                AS i (booking_id, applied_version, site, visitor_id, published, valid_from,
                      valid_to, failure_code, tenant_key)
           JOIN booking_snapshots s
             ON s.booking_id = i.booking_id AND s.version <= i.applied_version
          ORDER BY i.booking_id
         ON CONFLICT (booking_id) DO UPDATE
            SET applied_version = EXCLUDED.applied_version,
                site = COALESCE(EXCLUDED.site, visitor_access.site),
                -- The tenant goes with the visitor: kept once one was made there.
                tenant_key = CASE WHEN visitor_access.visitor_id IS NULL
                                  THEN EXCLUDED.tenant_key ELSE visitor_access.tenant_key END,
                visitor_id = COALESCE(EXCLUDED.visitor_id, visitor_access.visitor_id),
                -- `none` is what no result published now becomes: keep the one on record.
                published = CASE WHEN EXCLUDED.published = 'none'
                                 THEN visitor_access.published ELSE EXCLUDED.published END,
                valid_from = EXCLUDED.valid_from,
                valid_to = EXCLUDED.valid_to, failure_code = EXCLUDED.failure_code,
                updated_at = now()
         RETURNING booking_id",
    )
    .bind(&columns.booking_id)
    .bind(&columns.applied_version)
    .bind(&columns.site)
    .bind(&columns.visitor_id)
    .bind(&columns.published)
    .bind(&columns.valid_from)
    .bind(&columns.valid_to)
    .bind(&columns.failure_code)
    .bind(&columns.tenant_key)
    .fetch_all(conn)
    .await?;
    Ok(written.into_iter().collect())
}

/// [`AppliedRow`]s as the columns `unnest` takes.
#[derive(Default)]
struct AppliedColumns<'a> {
    booking_id: Vec<Uuid>,
    applied_version: Vec<i64>,
    site: Vec<Option<&'a str>>,
    visitor_id: Vec<Option<&'a str>>,
    published: Vec<Option<&'a str>>,
    valid_from: Vec<Option<NaiveDateTime>>,
    valid_to: Vec<Option<NaiveDateTime>>,
    failure_code: Vec<Option<&'a str>>,
    tenant_key: Vec<Option<&'a str>>,
}

impl<'a> AppliedColumns<'a> {
    fn push(&mut self, row: &AppliedRow<'a>) {
        let applied = row.applied;
        let (window, failure_code) = match &applied.published {
            LastPublished::Access(window) => (Some(*window), None),
            LastPublished::Failed(code) => (None, Some(code.as_str())),
            LastPublished::Nothing | LastPublished::Revoked => (None, None),
        };
        self.booking_id.push(row.booking_id);
        self.applied_version.push(applied.version);
        self.site.push(applied.site.as_deref());
        self.visitor_id.push(applied.visitor_id.as_deref());
        self.published.push(row.published_now);
        self.valid_from.push(window.map(|w| w.from));
        self.valid_to.push(window.map(|w| w.to));
        self.failure_code.push(failure_code);
        self.tenant_key.push(match &applied.tenant {
            Tenant::Default => None,
            Tenant::Own(key) => Some(key.as_str()),
        });
    }
}

/// Stores a building's iPassan connection change unless a newer version is held (the version
/// rule), and the tenant's credentials unless newer ones are held. Returns whether the
/// building's connection changed.
pub async fn record_connection(
    conn: &mut PgConnection,
    version: i64,
    occurred_at: DateTime<Utc>,
    change: &IpassanConnectionChange,
) -> Result<bool, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = change.connection.as_ref().map(tenant_key);
    let changed = sqlx::query(
        "INSERT INTO building_connections (building_id, version, tenant_key, site)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (building_id) DO UPDATE
            SET version = EXCLUDED.version, tenant_key = EXCLUDED.tenant_key,
                site = EXCLUDED.site, updated_at = now()
          WHERE building_connections.version < EXCLUDED.version",
    )
    .bind(&change.building_id)
    .bind(version)
    .bind(tenant.as_deref())
    .bind(change.connection.as_ref().map(|c| c.site.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if let (Some(key), Some(connection)) = (&tenant, &change.connection) {
        sqlx::query(
            "INSERT INTO tenants (tenant_key, connection, changed_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_key) DO UPDATE
                SET connection = EXCLUDED.connection, changed_at = EXCLUDED.changed_at,
                    updated_at = now()
              WHERE tenants.changed_at <= EXCLUDED.changed_at",
        )
        .bind(key)
        .bind(sqlx::types::Json(connection))
        .bind(occurred_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// A tenant's stored connection (client secret sealed).
pub async fn tenant(
    db: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT connection FROM tenants WHERE tenant_key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?,
    )
}

/// Every stored tenant: key and connection.
pub async fn all_tenants(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT tenant_key, connection FROM tenants ORDER BY tenant_key")
            .fetch_all(db)
            .await?,
    )
}

/// Writes back a tenant's connection whose secret was re-sealed under the current key, unless
/// it changed meanwhile.
pub async fn reseal_tenant(
    db: impl PgExecutor<'_>,
    key: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET connection = $3 WHERE tenant_key = $1 AND connection = $2")
        .bind(key)
        .bind(before)
        .bind(after)
        .execute(db)
        .await?;
    Ok(())
}
