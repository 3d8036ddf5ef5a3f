//! `buildings`: name, time zone, manager emails, iPassan site and double-booking policy; read
//! together with the versions of the building's own connections (`building_connections`,
//! [`super::connections`]), which every booking snapshot carries.

use chrono_tz::Tz;
use contracts::DoubleBookingPolicy;
use sqlx::PgExecutor;

use super::Upsert;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BuildingRow {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub manager_emails: Vec<String>,
    /// The building's iPassan site: its own iPassan connection's site when it has one, else the
    /// `ipassan_site` a manager set.
    pub ipassan_site: Option<String>,
    pub double_booking_policy: String,
    /// Versions of the building's own connections (0: never had one).
    pub ipassan_connection_version: i64,
    pub salto_connection_version: i64,
    /// Whether the building has its own connection now (else it uses the deployment default).
    pub ipassan_connected: bool,
    pub salto_connected: bool,
}

/// The columns of a [`BuildingRow`], for a query over `buildings b` joined as in [`FROM_BUILDINGS`].
pub const BUILDING_COLUMNS: &str = "b.id, b.name, b.timezone, b.manager_emails,
    COALESCE(ci.settings->>'site', b.ipassan_site) AS ipassan_site, b.double_booking_policy,
    COALESCE(ci.version, 0) AS ipassan_connection_version,
    COALESCE(cs.version, 0) AS salto_connection_version,
    (ci.settings IS NOT NULL) AS ipassan_connected, (cs.settings IS NOT NULL) AS salto_connected";

/// `buildings b` with its connections, for [`BUILDING_COLUMNS`].
pub const FROM_BUILDINGS: &str = "buildings b
    LEFT JOIN building_connections ci ON ci.building_id = b.id AND ci.system = 'ipassan'
    LEFT JOIN building_connections cs ON cs.building_id = b.id AND cs.system = 'salto'";

/// A stored building whose time zone no longer parses (the zone database changed under it).
#[derive(Debug, thiserror::Error)]
#[error("building {building} has time zone `{timezone}`, which is not known")]
pub struct UnknownZone {
    pub building: String,
    pub timezone: String,
}

impl BuildingRow {
    pub fn zone(&self) -> Result<Tz, UnknownZone> {
        self.timezone.parse::<Tz>().map_err(|_| UnknownZone {
            building: self.id.clone(),
            timezone: self.timezone.clone(),
        })
    }

    pub fn policy(&self) -> DoubleBookingPolicy {
        policy_from_stored(&self.double_booking_policy)
    }

    /// The building as events carry it.
    pub fn to_contract(&self) -> contracts::Building {
        contracts::Building {
            id: self.id.clone(),
            name: self.name.clone(),
            timezone: self.timezone.clone(),
            manager_emails: self.manager_emails.clone(),
            ipassan_site: self.ipassan_site.clone(),
            double_booking_policy: self.policy(),
            connection_versions: contracts::ConnectionVersions {
                ipassan: self.ipassan_connection_version,
                salto: self.salto_connection_version,
            },
        }
    }
}

pub fn policy_from_stored(text: &str) -> DoubleBookingPolicy {
    match text {
        "manual" => DoubleBookingPolicy::Manual,
        _ => DoubleBookingPolicy::Auto,
    }
}

pub fn policy_to_stored(policy: DoubleBookingPolicy) -> &'static str {
    match policy {
        DoubleBookingPolicy::Auto => "auto",
        DoubleBookingPolicy::Manual => "manual",
    }
}

/// A building as a manager writes it.
pub struct BuildingRecord<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub timezone: &'a str,
    pub manager_emails: &'a [String],
    pub ipassan_site: Option<&'a str>,
    pub double_booking_policy: DoubleBookingPolicy,
}

pub async fn find(db: impl PgExecutor<'_>, id: &str) -> Result<Option<BuildingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BUILDING_COLUMNS} FROM {FROM_BUILDINGS} WHERE b.id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn upsert(
    db: impl PgExecutor<'_>,
    building: &BuildingRecord<'_>,
) -> Result<Upsert, sqlx::Error> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO buildings (id, name, timezone, manager_emails, ipassan_site, double_booking_policy)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name,
             timezone = EXCLUDED.timezone,
             manager_emails = EXCLUDED.manager_emails,
             ipassan_site = EXCLUDED.ipassan_site,
             double_booking_policy = EXCLUDED.double_booking_policy,
             updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(building.id)
    .bind(building.name)
    .bind(building.timezone)
    .bind(building.manager_emails)
    .bind(building.ipassan_site)
    .bind(policy_to_stored(building.double_booking_policy))
    .fetch_one(db)
    .await?;
    Ok(Upsert::from_inserted(inserted))
}
