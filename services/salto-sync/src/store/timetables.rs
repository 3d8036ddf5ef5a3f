//! Each server's timetable pool (`timetables`: our IDs by interval set, and the IDs found taken
//! by someone else) and its exhaustion alerts (`pool_alerts`).

use sqlx::PgConnection;

/// The IDs of a query, as the `u32` SHIP uses (a stored ID is always 1..1024).
fn ids(stored: Vec<i32>) -> Vec<u32> {
    stored
        .into_iter()
        .filter_map(|id| u32::try_from(id).ok())
        .collect()
}

/// The timetable a server's pool holds for an interval set, share-locked until the caller's
/// transaction ends: the pool's clean-up (which locks rows `FOR UPDATE SKIP LOCKED`) then leaves
/// it alone while a transaction is about to use it.
pub async fn for_key(
    conn: &mut PgConnection,
    server: &str,
    key: &str,
) -> Result<Option<u32>, sqlx::Error> {
    let id: Option<i32> = sqlx::query_scalar(
        "SELECT timetable_id FROM timetables WHERE server = $1 AND interval_key = $2 FOR SHARE",
    )
    .bind(server)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(id.and_then(|id| u32::try_from(id).ok()))
}

/// Every timetable ID a server's pool knows is taken (ours or someone else's).
pub async fn taken_ids(conn: &mut PgConnection, server: &str) -> Result<Vec<u32>, sqlx::Error> {
    let stored: Vec<i32> =
        sqlx::query_scalar("SELECT timetable_id FROM timetables WHERE server = $1 ORDER BY 1")
            .bind(server)
            .fetch_all(conn)
            .await?;
    Ok(ids(stored))
}

/// How many of a server's timetable IDs are connecX's, and how many someone else's.
pub async fn pool_counts(conn: &mut PgConnection, server: &str) -> Result<(u32, u32), sqlx::Error> {
    let (ours, others): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE interval_key IS NOT NULL),
                count(*) FILTER (WHERE interval_key IS NULL)
           FROM timetables WHERE server = $1",
    )
    .bind(server)
    .fetch_one(conn)
    .await?;
    Ok((
        u32::try_from(ours).unwrap_or(u32::MAX),
        u32::try_from(others).unwrap_or(u32::MAX),
    ))
}

/// Records a timetable ID of a server: ours for `key`, or (`None`) taken in Salto by someone
/// else.
pub async fn record(
    conn: &mut PgConnection,
    server: &str,
    id: u32,
    key: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timetables (server, timetable_id, interval_key) VALUES ($1, $2, $3)
         ON CONFLICT (server, timetable_id) DO UPDATE SET interval_key = EXCLUDED.interval_key",
    )
    .bind(server)
    .bind(id as i32)
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ())
}

/// connecX's timetables of a server that no permission of the ledger (nor a write a failed
/// transaction may have left in Salto) uses, locked for deletion. Rows a transaction has
/// share-locked are skipped: it is about to use them. A delete Salto refused is not tried again
/// for an hour.
pub async fn lock_unused(conn: &mut PgConnection, server: &str) -> Result<Vec<u32>, sqlx::Error> {
    let locked: Vec<i32> = sqlx::query_scalar(
        "SELECT t.timetable_id FROM timetables t
          WHERE t.server = $1 AND t.interval_key IS NOT NULL
            AND (t.delete_refused_at IS NULL OR t.delete_refused_at < now() - interval '1 hour')
            AND NOT EXISTS (SELECT 1 FROM permissions p
                             WHERE p.server = t.server AND p.timetable_id = t.timetable_id)
            AND NOT EXISTS (SELECT 1 FROM unrecorded_writes u
                             WHERE u.server = t.server AND u.timetable_id = t.timetable_id)
          ORDER BY t.timetable_id
          FOR UPDATE SKIP LOCKED",
    )
    .bind(server)
    .fetch_all(&mut *conn)
    .await?;
    // Looked at again by a new statement, which sees everything committed until now: a
    // transaction that took one of these rows before the lock above has committed since, and its
    // permission is visible here.
    let unused: Vec<i32> = sqlx::query_scalar(
        "SELECT id FROM unnest($2::int[]) AS id
          WHERE NOT EXISTS (SELECT 1 FROM permissions p WHERE p.server = $1 AND p.timetable_id = id)
            AND NOT EXISTS (SELECT 1 FROM unrecorded_writes u
                             WHERE u.server = $1 AND u.timetable_id = id)
          ORDER BY id",
    )
    .bind(server)
    .bind(&locked)
    .fetch_all(conn)
    .await?;
    Ok(ids(unused))
}

/// Removes a timetable from a server's pool (it was deleted in Salto).
pub async fn forget(conn: &mut PgConnection, server: &str, id: u32) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM timetables WHERE server = $1 AND timetable_id = $2")
        .bind(server)
        .bind(id as i32)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Notes that Salto refused to delete a timetable (a permission connecX does not own uses it).
pub async fn delete_refused(
    conn: &mut PgConnection,
    server: &str,
    id: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE timetables SET delete_refused_at = now() WHERE server = $1 AND timetable_id = $2",
    )
    .bind(server)
    .bind(id as i32)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records that a server's pool of `size` IDs ran out; `true` the first time since it last had
/// room (ops are told once per exhaustion). The pool is counted in the same statement: a sweep
/// that freed an ID since the caller found none deletes its row and clears the mark in one
/// commit, so this sees either both (room: nothing recorded, no alert) or neither (the mark
/// still set: no second alert).
pub async fn pool_exhausted(
    conn: &mut PgConnection,
    server: &str,
    size: u32,
) -> Result<bool, sqlx::Error> {
    let alerted = sqlx::query(
        "INSERT INTO pool_alerts (server)
         SELECT $1 WHERE (SELECT count(*) FROM timetables WHERE server = $1) >= $2
         ON CONFLICT (server) DO UPDATE SET alerted_at = now(), cleared_at = NULL
          WHERE pool_alerts.cleared_at IS NOT NULL",
    )
    .bind(server)
    .bind(i64::from(size))
    .execute(conn)
    .await?;
    Ok(alerted.rows_affected() == 1)
}

/// A server's pool has room again: the next exhaustion alerts again.
pub async fn pool_has_room(conn: &mut PgConnection, server: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pool_alerts SET cleared_at = now() WHERE server = $1 AND cleared_at IS NULL",
    )
    .bind(server)
    .execute(conn)
    .await
    .map(|_| ())
}
