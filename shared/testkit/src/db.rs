//! A fresh PostgreSQL database per test, on the machine's real server.
//!
//! Names carry their creation time, so databases left by killed test runs are dropped by later
//! runs instead of piling up.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const PREFIX: &str = "connecx_test_";

/// A database that exists for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// URL of the new database.
    pub url: String,
}

/// The server tests use: `CONNECX_TEST_DATABASE_URL`, or the local trust-auth server.
pub fn server_url() -> String {
    std::env::var("CONNECX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestDb {
    pub async fn create() -> TestDb {
        let server = server_url();
        let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {server} ({e}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 or set CONNECX_TEST_DATABASE_URL."
            )
        });
        static SWEPT: OnceLock<()> = OnceLock::new();
        if SWEPT.set(()).is_ok() {
            drop_stale(&mut admin).await;
        }
        let name = format!("{PREFIX}{}_{}", unix_now(), uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = match server.rfind('/') {
            Some(slash) => format!("{}/{name}", &server[..slash]),
            None => panic!("CONNECX_TEST_DATABASE_URL must end in /<database>"),
        };
        TestDb { name, url }
    }

    /// A pool on the test database whose search path is `schema` (to look at what a service
    /// stored, as an assertion).
    pub async fn pool(&self, schema: &str) -> sqlx::PgPool {
        let options: sqlx::postgres::PgConnectOptions = self
            .url
            .parse()
            .unwrap_or_else(|e| panic!("bad test database url: {e}"));
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.options([("search_path", schema)]))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name))
    }

    /// Ends every connection to the test database (a database outage as the services see it).
    pub async fn terminate_connections(&self) {
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("PostgreSQL reachable");
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&self.name)
            .execute(&mut admin)
            .await
            .expect("terminate connections");
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drops test databases older than two hours (left behind by killed runs).
async fn drop_stale(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'connecx\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(2 * 3600);
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|ts| ts < cutoff) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}
