//! PostgreSQL: one database, one schema per service (DESIGN §2).
//!
//! A service's pool has `search_path` set to its own schema, so its SQL and its sqlx migration
//! table live there and no service can read another's tables by accident.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

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
}

/// Connects a pool whose connections use `schema`, creating the schema if needed, and runs the
/// service's migrations in it. Safe to run from several replicas at once.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = settings.url.parse().map_err(DbError::Url)?;
    create_schema(&options, schema).await?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.options([("search_path", schema)]))
        .await
        .map_err(|source| DbError::Connect {
            url: crate::config::redact_url(&settings.url),
            source,
        })?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    tracing::info!(schema, "database ready");
    Ok(pool)
}

async fn create_schema(options: &PgConnectOptions, schema: &str) -> Result<(), DbError> {
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
            url: "(see database.url)".into(),
            source,
        })?;
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
