//! The `migrate` command of a service binary, checked the way a deployment runs it: the real
//! binary, a fresh database, nothing in the environment but `CONNECX__DATABASE__URL` (so it
//! proves the step needs none of the service's other keys or secrets).
//!
//! Each service's test binary calls [`migrate_command_tests!`] with its binary and schema: the
//! two checks as tests.

use std::path::Path;
use std::process::Output;

use sqlx::PgPool;

use crate::TestDb;

/// A service binary's `migrate` command and what it should leave behind.
#[derive(Debug, Clone, Copy)]
pub struct MigrateCommand {
    /// `env!("CARGO_BIN_EXE_<name>")`
    pub binary: &'static str,
    /// The schema the service owns.
    pub schema: &'static str,
    /// `concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")`
    pub migrations: &'static str,
}

/// One row of `_sqlx_migrations`: what a second run must leave untouched.
type MigrationRow = (i64, bool, Vec<u8>, chrono::DateTime<chrono::Utc>);

impl MigrateCommand {
    /// Runs `migrate` on a fresh database: it exits 0 having applied every migration file to the
    /// service's schema; a second run also exits 0 and changes nothing.
    pub async fn migrates_a_fresh_database_then_has_nothing_left_to_do(&self) {
        let db = TestDb::create().await;

        let first = self.run(&db.service_url(self.schema)).await;
        assert_success(&first, "the first `migrate`");
        assert!(
            combined(&first).contains("schema migrated"),
            "the first run says it migrated:\n{}",
            combined(&first)
        );
        let pool = db.pool(self.schema).await;
        let migrations = self.migration_rows(&pool).await;
        let files = self.migration_files();
        assert_eq!(
            migrations.len(),
            files,
            "every file in {} is applied to schema `{}`",
            self.migrations,
            self.schema
        );
        assert!(
            migrations.iter().all(|(_, success, _, _)| *success),
            "every migration succeeded: {migrations:?}"
        );
        let tables = self.tables(&pool).await;
        assert!(
            tables.iter().any(|t| t != "_sqlx_migrations"),
            "the migrations created the service's tables in `{}`: {tables:?}",
            self.schema
        );

        let second = self.run(&db.service_url(self.schema)).await;
        assert_success(&second, "the second `migrate`");
        assert!(
            combined(&second).contains("already up to date"),
            "the second run says there was nothing to do:\n{}",
            combined(&second)
        );
        assert_eq!(
            self.migration_rows(&pool).await,
            migrations,
            "a second run applies nothing"
        );
        assert_eq!(
            self.tables(&pool).await,
            tables,
            "a second run changes no table"
        );
        pool.close().await;
    }

    /// Runs `migrate` against a port nothing listens on: it exits non-zero and says which
    /// database it could not reach.
    pub async fn fails_naming_an_unreachable_database(&self) {
        let url = "postgres://postgres@127.0.0.1:1/connecx_unreachable";
        let output = self.run(url).await;
        let said = combined(&output);
        assert!(
            !output.status.success(),
            "`migrate` against an unreachable database must fail:\n{said}"
        );
        assert!(
            said.contains(
                "cannot reach PostgreSQL at postgres://postgres@127.0.0.1:1/connecx_unreachable"
            ),
            "the failure names the database:\n{said}"
        );
    }

    /// `<binary> migrate` with only `CONNECX__DATABASE__URL` in its environment (no `RUST_LOG`
    /// either: the checks read its info lines) and no `config/*.toml` in its working directory.
    async fn run(&self, database_url: &str) -> Output {
        tokio::process::Command::new(self.binary)
            .arg("migrate")
            .env_clear()
            .env("CONNECX__DATABASE__URL", database_url)
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary))
    }

    /// Migration files in the service's directory (a reversible migration counts once).
    fn migration_files(&self) -> usize {
        std::fs::read_dir(Path::new(self.migrations))
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", self.migrations))
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql") && !name.ends_with(".down.sql"))
            .count()
    }

    async fn migration_rows(&self, pool: &PgPool) -> Vec<MigrationRow> {
        sqlx::query_as(
            "SELECT version, success, checksum, installed_on FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("no _sqlx_migrations in schema `{}`: {e}", self.schema))
    }

    async fn tables(&self, pool: &PgPool) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
        )
        .bind(self.schema)
        .fetch_all(pool)
        .await
        .expect("list the schema's tables")
    }
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} exits 0, not {}:\n{}",
        output.status,
        combined(output)
    );
}

/// The two `migrate` tests every service has, for the service whose binary and schema are
/// named: `testkit::migrate_command_tests!(env!("CARGO_BIN_EXE_notifier"), notifier::SCHEMA);`
/// in the service's test binary. The migrations directory is the calling crate's `migrations/`.
#[macro_export]
macro_rules! migrate_command_tests {
    ($binary:expr, $schema:expr $(,)?) => {
        const MIGRATE: $crate::MigrateCommand = $crate::MigrateCommand {
            binary: $binary,
            schema: $schema,
            migrations: concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        };

        #[tokio::test]
        async fn migrate_applies_every_migration_to_a_fresh_database_and_a_second_run_changes_nothing()
         {
            MIGRATE
                .migrates_a_fresh_database_then_has_nothing_left_to_do()
                .await;
        }

        #[tokio::test]
        async fn migrate_fails_naming_the_database_when_it_is_unreachable() {
            MIGRATE.fails_naming_an_unreachable_database().await;
        }
    };
}
