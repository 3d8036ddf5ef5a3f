//! PostgreSQL: one database, one schema per service (docs/architecture.md, "Services and what each owns").
//!
//! A service's pool has `search_path` set to its own schema, so its SQL and its sqlx migration
//! table live there and no service can read another's tables by accident; with a PostgreSQL role
//! per service (deploy/postgres/roles.sql, docs/decisions/0010) it cannot on purpose either.
//!
//! Migrations run in two places, both safe beside running replicas: every service at start
//! ([`connect_and_migrate`], a no-op when the schema is up to date), and `<service> migrate`
//! ([`migrate_only`]), the deployment's step before the new version starts.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{ConfigError, DatabaseSettings, MigrateSettings, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL is not valid: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create schema `{schema}`: {source}")]
    Schema { schema: String, source: sqlx::Error },
    #[error("migrations of schema `{schema}` failed: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot read the migrations applied to schema `{schema}`: {source}")]
    Applied { schema: String, source: sqlx::Error },
}

/// Whether `error` means the database itself is out of reach — no connection could be had in
/// time, the pool is shut, the socket failed, or the server ended the session — rather than that
/// a statement failed. The first is an outage to wait out (booking-api answers 503, a service
/// starting waits), the second a bug.
///
/// A protocol error counts as lost too: it is what sqlx reports for a connection closed while
/// it is being opened (a proxy or balancer in front of a database that is down accepts, then
/// hangs up, and the answer to sqlx's first message never comes), and the connection is closed
/// after it either way.
pub fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| sqlstate_lost(&code)),
        _ => false,
    }
}

/// SQLSTATEs of a session the server cannot or will not serve: class 08 (connection exception),
/// `57P01` admin_shutdown (e.g. `pg_terminate_backend`), `57P02` crash_shutdown, `57P03`
/// cannot_connect_now (starting up or in recovery), and `53300` too_many_connections.
fn sqlstate_lost(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Why `<service> migrate` failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateOnlyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// One migration recorded in a schema's `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// What a migration run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub schema: &'static str,
    /// Migrations that were not applied before this run (by it, or by a replica beside it).
    pub newly_applied: Vec<AppliedMigration>,
    /// Migrations the schema has now.
    pub total: usize,
}

/// Connects a pool whose connections use `schema`, creating the schema if needed, and runs the
/// service's migrations in it. Safe to run from several replicas at once, and again after a
/// failure (a service's start waits out lost connections around it:
/// [`start_waiting_out_lost_connections`]).
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let pool = connect(settings, schema).await?;
    run_migrations(&pool, schema, migrator).await?;
    tracing::info!(schema, "database ready");
    Ok(pool)
}

/// How often a service tries to start when database connections are lost meanwhile.
pub const STARTUP_ATTEMPTS: u32 = 5;

/// Runs a service's whole start (`build`) again when it failed because database connections were
/// lost meanwhile (see [`caused_by_lost_connection`]), up to [`STARTUP_ATTEMPTS`] tries a second
/// apart. A start reads and writes more than its migrations (stored servers, sealed secrets); a
/// session ended under any of those must not end the service.
pub async fn start_waiting_out_lost_connections<T, E, F, Fut>(mut build: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut attempt = 1;
    loop {
        match build().await {
            Err(error) if attempt < STARTUP_ATTEMPTS && caused_by_lost_connection(&error) => {
                tracing::warn!(attempt, %error, "database connection lost while starting; starting again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Whether `error`, or any error it was caused by, is a lost database connection.
pub fn caused_by_lost_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<sqlx::Error>()
            .is_some_and(connection_lost)
            || error
                .downcast_ref::<DbError>()
                .is_some_and(DbError::is_connection_lost)
        {
            return true;
        }
        next = error.source();
    }
    false
}

impl DbError {
    /// Whether the database was out of reach or dropped the connection (worth another try),
    /// rather than refusing what was asked.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::Url(_) => false,
            DbError::Connect { source, .. }
            | DbError::Schema { source, .. }
            | DbError::Applied { source, .. } => connection_lost(source),
            DbError::Migrate { source, .. } => match source {
                sqlx::migrate::MigrateError::Execute(error)
                | sqlx::migrate::MigrateError::ExecuteMigration(error, _) => connection_lost(error),
                _ => false,
            },
        }
    }
}

/// `<service> migrate`: loads only the database and log settings (`CONNECX__DATABASE__*`,
/// `CONNECX__LOG__*`), starts logging as `service`, brings `schema` up to date and says what it
/// did. The binary then exits; running the service afterwards finds nothing left to do.
pub async fn migrate_only(
    service: &'static str,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<Migrated, MigrateOnlyError> {
    let settings = crate::config::load::<MigrateSettings>()?;
    crate::telemetry::init(service, &settings.log);
    Ok(migrate_schema(&settings.database, schema, migrator).await?)
}

/// Creates `schema` if needed and runs `migrator` in it, logging each migration that was new and
/// the schema's state after. Safe beside running replicas and other migration runs.
pub async fn migrate_schema(
    settings: &DatabaseSettings,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<Migrated, DbError> {
    let database = redact_url(&settings.url);
    tracing::info!(schema, %database, "migrating");
    let pool = connect(settings, schema).await?;
    let before = applied_migrations(&pool, schema).await?;
    run_migrations(&pool, schema, migrator).await?;
    let after = applied_migrations(&pool, schema).await?;
    pool.close().await;
    let newly_applied: Vec<_> = after
        .iter()
        .filter(|m| !before.contains(m))
        .cloned()
        .collect();
    for migration in &newly_applied {
        tracing::info!(
            schema,
            version = migration.version,
            description = %migration.description,
            "migration applied"
        );
    }
    let latest = after.last().map(|m| m.version);
    if newly_applied.is_empty() {
        tracing::info!(
            schema,
            total = after.len(),
            latest,
            "schema already up to date"
        );
    } else {
        tracing::info!(
            schema,
            applied = newly_applied.len(),
            total = after.len(),
            latest,
            "schema migrated"
        );
    }
    Ok(Migrated {
        schema,
        newly_applied,
        total: after.len(),
    })
}

/// A pool on `schema` (created if needed).
async fn connect(settings: &DatabaseSettings, schema: &'static str) -> Result<PgPool, DbError> {
    connect_pool(settings, schema, settings.max_connections).await
}

/// A further pool of `max_connections` on `schema`, for work that must not wait for the main
/// pool's connections (e.g. a write committed on its own while a transaction is open).
pub async fn connect_pool(
    settings: &DatabaseSettings,
    schema: &'static str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = settings.url.parse().map_err(DbError::Url)?;
    let url = redact_url(&settings.url);
    create_schema(&options, &url, schema).await?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.options([("search_path", schema)]))
        .await
        .map_err(|source| DbError::Connect { url, source })
}

/// A second pool on `pool`'s database and schema, of `max_connections`, that holds no
/// connection until one is asked for (work that runs now and then, such as a nightly job, on
/// connections of its own). Idle connections close after sqlx's ten minutes.
pub fn sibling_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

async fn run_migrations(
    pool: &PgPool,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<(), DbError> {
    // sqlx holds its own advisory lock for the whole run, so replicas apply each migration once.
    migrator.run(pool).await.map_err(|source| DbError::Migrate {
        schema: schema.to_owned(),
        source,
    })
}

/// The successful migrations recorded in the pool's schema, oldest first (none before the first
/// run created the table).
async fn applied_migrations(pool: &PgPool, schema: &str) -> Result<Vec<AppliedMigration>, DbError> {
    let err = |source| DbError::Applied {
        schema: schema.to_owned(),
        source,
    };
    // The search path is the service's schema only, so this finds its table or none.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?;
    Ok(rows
        .into_iter()
        .map(|(version, description)| AppliedMigration {
            version,
            description,
        })
        .collect())
}

async fn create_schema(options: &PgConnectOptions, url: &str, schema: &str) -> Result<(), DbError> {
    let err = |source| DbError::Schema {
        schema: schema.to_owned(),
        source,
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await
        .map_err(|source| DbError::Connect {
            url: url.to_owned(),
            source,
        })?;
    // A deployment with a role per service (deploy/postgres/roles.sql) made the schema already,
    // owned by the service's role, and gave that role no right to create schemas: asking to
    // create it again would be refused even with IF NOT EXISTS.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&pool)
            .await
            .map_err(err)?;
    if exists {
        pool.close().await;
        return Ok(());
    }
    // Two replicas starting together would race on CREATE SCHEMA IF NOT EXISTS (it can fail
    // with a unique violation), so the creation is serialized by a transaction-scoped lock.
    let mut tx = pool.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('connecx.create_schema'))")
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    // The schema name is one of the services' constants, never input.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service's start error, as the services wrap what failed.
    #[derive(Debug, thiserror::Error)]
    #[error("reading the stored servers: {0}")]
    struct StartFailed(#[source] sqlx::Error);

    fn lost() -> StartFailed {
        StartFailed(sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into()))
    }

    #[test]
    fn a_lost_connection_anywhere_down_the_chain_counts() {
        assert!(caused_by_lost_connection(&lost()));
        assert!(!caused_by_lost_connection(&StartFailed(
            sqlx::Error::RowNotFound
        )));
    }

    #[tokio::test]
    async fn a_start_is_tried_again_while_connections_are_lost_and_not_for_other_errors() {
        let mut attempts = 0;
        let started = start_waiting_out_lost_connections(|| {
            attempts += 1;
            let attempt = attempts;
            async move {
                if attempt < 3 {
                    Err(lost())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await
        .expect("the third start works");
        assert_eq!(started, 3);

        let mut attempts = 0;
        let failed: Result<(), StartFailed> = start_waiting_out_lost_connections(|| {
            attempts += 1;
            async { Err(StartFailed(sqlx::Error::RowNotFound)) }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(
            attempts, 1,
            "a start that fails for another reason is not repeated"
        );
    }

    #[test]
    fn a_lost_database_connection_is_an_outage_and_a_failed_statement_a_bug() {
        for lost in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into()),
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
            sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into()),
        ] {
            assert!(connection_lost(&lost), "{lost}");
        }
        for bug in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("id".into()),
            sqlx::Error::Decode("not a uuid".into()),
        ] {
            assert!(!connection_lost(&bug), "{bug}");
        }
        for code in [
            "08000", "08003", "08006", "57P01", "57P02", "57P03", "53300",
        ] {
            assert!(sqlstate_lost(code), "{code}");
        }
        // unique_violation, serialization_failure, query_canceled, syntax_error
        for code in ["23505", "40001", "57014", "42601"] {
            assert!(!sqlstate_lost(code), "{code}");
        }
    }
}
