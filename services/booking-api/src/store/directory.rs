//! `apartments`, `facilities` and `residents`: the building's directory that managers keep up to
//! date and bookings refer to. Each is keyed by (building, id).

use sqlx::{FromRow, PgExecutor, Row};

use super::Upsert;
use super::buildings::{BUILDING_COLUMNS, BuildingRow, FROM_BUILDINGS};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApartmentRow {
    pub id: String,
    pub access_control_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FacilityRow {
    pub id: String,
    pub name: String,
    pub access_control_facility_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResidentRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub apartment_id: String,
    pub ipassan_person_id: Option<String>,
}

impl ResidentRow {
    /// The resident as events carry it.
    pub fn to_contract(&self) -> contracts::Resident {
        contracts::Resident {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            apartment_id: self.apartment_id.clone(),
            ipassan_person_id: self.ipassan_person_id.clone(),
        }
    }
}

pub async fn find_apartment(
    db: impl PgExecutor<'_>,
    building_id: &str,
    id: &str,
) -> Result<Option<ApartmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, access_control_id FROM apartments WHERE building_id = $1 AND id = $2",
    )
    .bind(building_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn upsert_apartment(
    db: impl PgExecutor<'_>,
    building_id: &str,
    id: &str,
    access_control_id: Option<&str>,
) -> Result<Upsert, sqlx::Error> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO apartments (building_id, id, access_control_id) VALUES ($1, $2, $3)
         ON CONFLICT (building_id, id) DO UPDATE SET
             access_control_id = EXCLUDED.access_control_id, updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(building_id)
    .bind(id)
    .bind(access_control_id)
    .fetch_one(db)
    .await?;
    Ok(Upsert::from_inserted(inserted))
}

pub async fn find_facility(
    db: impl PgExecutor<'_>,
    building_id: &str,
    id: &str,
) -> Result<Option<FacilityRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, access_control_facility_id FROM facilities WHERE building_id = $1 AND id = $2",
    )
    .bind(building_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn upsert_facility(
    db: impl PgExecutor<'_>,
    building_id: &str,
    id: &str,
    name: &str,
    access_control_facility_id: Option<&str>,
) -> Result<Upsert, sqlx::Error> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO facilities (building_id, id, name, access_control_facility_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (building_id, id) DO UPDATE SET
             name = EXCLUDED.name,
             access_control_facility_id = EXCLUDED.access_control_facility_id,
             updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(building_id)
    .bind(id)
    .bind(name)
    .bind(access_control_facility_id)
    .fetch_one(db)
    .await?;
    Ok(Upsert::from_inserted(inserted))
}

pub async fn find_resident(
    db: impl PgExecutor<'_>,
    building_id: &str,
    id: &str,
) -> Result<Option<ResidentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, email, apartment_id, ipassan_person_id
         FROM residents WHERE building_id = $1 AND id = $2",
    )
    .bind(building_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A building and one of its residents, in one round trip: `None` when the building is not
/// registered, `Some((building, None))` when the resident is not. With `lock`, the same round
/// trip also takes the transaction lock of that name (as `bookings::lock_for_count` takes it) when
/// the building exists: a creation then counts its resident's live bookings in its next statement.
pub async fn find_building_and_resident(
    db: impl PgExecutor<'_>,
    building_id: &str,
    resident_id: &str,
    lock: Option<&str>,
) -> Result<Option<(BuildingRow, Option<ResidentRow>)>, sqlx::Error> {
    let lock_column = match lock {
        Some(_) => ", pg_advisory_xact_lock(hashtextextended($3, 0)) AS locked",
        None => "",
    };
    let query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BUILDING_COLUMNS}, r.id AS r_id, r.name AS r_name, r.email AS r_email,
                r.apartment_id AS r_apartment_id, r.ipassan_person_id AS r_ipassan_person_id
                {lock_column}
           FROM {FROM_BUILDINGS} LEFT JOIN residents r ON r.building_id = b.id AND r.id = $2
          WHERE b.id = $1"
    )))
    .bind(building_id)
    .bind(resident_id);
    let query = match lock {
        Some(key) => query.bind(key),
        None => query,
    };
    let row = query.fetch_optional(db).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let building = BuildingRow::from_row(&row)?;
    let resident_id: Option<String> = row.try_get("r_id")?;
    let resident = match resident_id {
        Some(id) => Some(ResidentRow {
            id,
            name: row.try_get("r_name")?,
            email: row.try_get("r_email")?,
            apartment_id: row.try_get("r_apartment_id")?,
            ipassan_person_id: row.try_get("r_ipassan_person_id")?,
        }),
        None => None,
    };
    Ok(Some((building, resident)))
}

/// A resident as a manager writes it.
pub struct ResidentRecord<'a> {
    pub building_id: &'a str,
    pub id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub apartment_id: &'a str,
    pub ipassan_person_id: Option<&'a str>,
}

pub async fn upsert_resident(
    db: impl PgExecutor<'_>,
    resident: &ResidentRecord<'_>,
) -> Result<Upsert, sqlx::Error> {
    let inserted: bool = sqlx::query_scalar(
        "INSERT INTO residents (building_id, id, name, email, apartment_id, ipassan_person_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (building_id, id) DO UPDATE SET
             name = EXCLUDED.name,
             email = EXCLUDED.email,
             apartment_id = EXCLUDED.apartment_id,
             ipassan_person_id = EXCLUDED.ipassan_person_id,
             updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(resident.building_id)
    .bind(resident.id)
    .bind(resident.name)
    .bind(resident.email)
    .bind(resident.apartment_id)
    .bind(resident.ipassan_person_id)
    .fetch_one(db)
    .await?;
    Ok(Upsert::from_inserted(inserted))
}
