//! `buildings`: name, time zone, manager emails, iPassan site and double-booking policy.

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
    pub ipassan_site: Option<String>,
    pub double_booking_policy: String,
}

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
    sqlx::query_as(
        "SELECT id, name, timezone, manager_emails, ipassan_site, double_booking_policy
         FROM buildings WHERE id = $1",
    )
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
