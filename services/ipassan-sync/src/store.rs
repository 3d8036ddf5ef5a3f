//! This worker's records in its `ipassan_sync` schema: the booking snapshots of the version rule
//! (written by `platform::snapshots`), `visitor_access` (what was last applied and published for
//! each booking, and in which tenant), and the buildings' own iPassan connections
//! (`building_connections`, `tenants`; see [`crate::tenants`]).
//!
//! A booking is handled under a transaction-scoped advisory lock, so two messages of one booking
//! (a retry and a newer version, on one replica or two) never talk to iPassan at the same time:
//! the second waits, then reads the stored latest snapshot and what the first did. The lock goes
//! with the transaction, so a handler that dies cannot leave it held.

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

/// Begins the transaction that handles `booking_id` on `conn`, holding its lock. `BEGIN` and the
/// lock go to the server as one simple query: one round trip instead of two, for every message.
pub async fn lock_booking(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Transaction<'_, Postgres>, StoreError> {
    // The key is a UUID's canonical text (hex digits and hyphens only), so the literal is safe;
    // it is the same key as `hashtextextended($1, 0)` with a bound parameter.
    let statement = format!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('ipassan-sync:{}', 0))",
        booking_id.hyphenated()
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

/// What the locked step starts from: the latest snapshot held for the booking (as
/// `platform::snapshots::latest`, on the locked connection), what was applied and published for
/// it so far, and the building's own connection — read in one query.
pub async fn held_state(
    conn: &mut PgConnection,
    booking_id: Uuid,
) -> Result<Option<HeldState>, StoreError> {
    let row: Option<HeldRow> = sqlx::query_as(
        "SELECT s.envelope::text, a.applied_version, a.site, a.visitor_id, a.published, a.valid_from,
                a.valid_to, a.failure_code, a.tenant_key, c.version, c.tenant_key, c.site
           FROM booking_snapshots s
           LEFT JOIN visitor_access a ON a.booking_id = s.booking_id
           LEFT JOIN building_connections c
                  ON c.building_id = s.envelope->'data'->'building'->>'id'
          WHERE s.booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(conn)
    .await?;
    let Some((
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
    )) = row
    else {
        return Ok(None);
    };
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
    Ok(Some(HeldState {
        latest: envelope,
        applied,
        connection,
    }))
}

/// What [`held_state`] read.
#[derive(Debug)]
pub struct HeldState {
    pub latest: Envelope,
    pub applied: Option<Applied>,
    /// The building's own connection, if it ever had one.
    pub connection: Option<HeldConnection>,
}

type HeldRow = (
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

/// Records that `applied.version` is settled, with the result now on record. `published_now` is
/// the result type published by this step (`granted`, `updated`, …), if any. Returns the version
/// of the snapshot held now (a newer one may have arrived while the handler worked), read by the
/// same statement.
pub async fn save_applied(
    conn: &mut PgConnection,
    booking_id: Uuid,
    applied: &Applied,
    published_now: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let (window, failure_code) = match &applied.published {
        LastPublished::Access(window) => (Some(*window), None),
        LastPublished::Failed(code) => (None, Some(code.as_str())),
        LastPublished::Nothing | LastPublished::Revoked => (None, None),
    };
    let held: Option<i64> = sqlx::query_scalar(
        "INSERT INTO visitor_access
                (booking_id, applied_version, site, visitor_id, published, valid_from, valid_to,
                 failure_code, tenant_key)
         VALUES ($1, $2, $3, $4, COALESCE($5, 'none'), $6, $7, $8, $9)
         ON CONFLICT (booking_id) DO UPDATE
            SET applied_version = EXCLUDED.applied_version,
                site = COALESCE(EXCLUDED.site, visitor_access.site),
                -- The tenant goes with the visitor: kept once one was made there.
                tenant_key = CASE WHEN visitor_access.visitor_id IS NULL
                                  THEN EXCLUDED.tenant_key ELSE visitor_access.tenant_key END,
                visitor_id = COALESCE(EXCLUDED.visitor_id, visitor_access.visitor_id),
                published = COALESCE($5, visitor_access.published), valid_from = EXCLUDED.valid_from,
                valid_to = EXCLUDED.valid_to, failure_code = EXCLUDED.failure_code,
                updated_at = now()
         RETURNING (SELECT version FROM booking_snapshots WHERE booking_id = $1)",
    )
    .bind(booking_id)
    .bind(applied.version)
    .bind(applied.site.as_deref())
    .bind(applied.visitor_id.as_deref())
    .bind(published_now)
    .bind(window.map(|w| w.from))
    .bind(window.map(|w| w.to))
    .bind(failure_code)
    .bind(match &applied.tenant {
        Tenant::Default => None,
        Tenant::Own(key) => Some(key.as_str()),
    })
    .fetch_one(conn)
    .await?;
    Ok(held)
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
