//! A fresh PostgreSQL database per test, on the machine's real server.
//!
//! Names carry their creation time, so databases left by killed test runs are dropped by later
//! runs instead of piling up.
//!
//! Every fresh database gets the services' roles and schemas from `deploy/postgres/roles.sql`,
//! as a deployment does, and a service under test connects as its own role
//! ([`TestDb::service_url`]); the test itself looks at any schema as the server's superuser.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const PREFIX: &str = "connecx_test_";

/// The deployment's role script: one login role per service owning that service's schema.
pub const ROLES_SQL: &str = include_str!("../../../deploy/postgres/roles.sql");

/// Each service's schema and the PostgreSQL role that owns it (as `deploy/postgres/roles.sql`
/// makes them).
pub const SERVICE_ROLES: [(&str, &str); 4] = [
    ("booking", "connecx_booking_api"),
    ("ipassan_sync", "connecx_ipassan_sync"),
    ("salto_sync", "connecx_salto_sync"),
    ("notifier", "connecx_notifier"),
];

/// The role that owns `schema`; panics for a schema that is not a service's.
pub fn service_role(schema: &str) -> &'static str {
    SERVICE_ROLES
        .iter()
        .find(|(s, _)| *s == schema)
        .map(|(_, role)| *role)
        .unwrap_or_else(|| {
            panic!("`{schema}` is not a service's schema (deploy/postgres/roles.sql)")
        })
}

/// A database that exists for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// URL of the new database.
    pub url: String,
}

/// The server tests use: `CONNECX_TEST_DATABASE_URL`, or the local trust-auth server.
///
/// Locally without TLS: on loopback it protects nothing, and rustls built without optimisation
/// (the test profile) made every new connection slow enough to show in the soak's latencies.
/// TLS itself is tested against a server of its own (`shared/platform/tests/postgres_tls.rs`).
pub fn server_url() -> String {
    std::env::var("CONNECX_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned()
    })
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
        // The server's URL with the new database (its options, e.g. `sslmode`, kept).
        let url = {
            let mut url = reqwest::Url::parse(&server)
                .unwrap_or_else(|e| panic!("CONNECX_TEST_DATABASE_URL is not a URL ({e})"));
            url.set_path(&format!("/{name}"));
            url.to_string()
        };
        let mut fresh = PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
        sqlx::raw_sql(ROLES_SQL)
            .execute(&mut fresh)
            .await
            .unwrap_or_else(|e| panic!("deploy/postgres/roles.sql failed on {name}: {e}"));
        TestDb { name, url }
    }

    /// The URL a service uses: the test database, as the role that owns `schema` (a service's
    /// schema constant, e.g. `notifier::SCHEMA`).
    pub fn service_url(&self, schema: &str) -> String {
        self.url_as(service_role(schema))
    }

    /// The test database's URL with `role` as the user (no password: the local server trusts).
    pub fn url_as(&self, role: &str) -> String {
        url_as(&self.url, role)
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

/// `url` with `role` as its user and no password (the local test server trusts; a deployment's
/// URLs carry each role's password).
pub fn url_as(url: &str, role: &str) -> String {
    let mut parsed =
        reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad database url {url}: {e}"));
    parsed
        .set_username(role)
        .unwrap_or_else(|()| panic!("cannot set user {role} on {url}"));
    parsed
        .set_password(None)
        .unwrap_or_else(|()| panic!("cannot clear the password of {url}"));
    parsed.to_string()
}

/// `database` as the service owning `schema` connects: as that service's role.
pub fn as_service(
    database: &platform::config::DatabaseSettings,
    schema: &str,
) -> platform::config::DatabaseSettings {
    platform::config::DatabaseSettings {
        url: url_as(&database.url, service_role(schema)),
        max_connections: database.max_connections,
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
