//! Least privilege on PostgreSQL: each service connects as its own role
//! (`deploy/postgres/roles.sql`), which owns that service's schema and can neither read, write nor
//! create anything in another's, nor make schemas of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use platform::config::DatabaseSettings;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};
use testkit::TestDb;

/// Every service: its schema and its migrations.
fn services() -> [(&'static str, &'static Migrator); 4] {
    [
        (booking_api::SCHEMA, &booking_api::MIGRATOR),
        (ipassan_sync::SCHEMA, &ipassan_sync::MIGRATOR),
        (salto_sync::SCHEMA, &salto_sync::MIGRATOR),
        (notifier::SCHEMA, &notifier::MIGRATOR),
    ]
}

/// The SQLSTATE of a refused statement, or `None` when it ran.
async fn refusal(connection: &mut PgConnection, sql: &str) -> Option<String> {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *connection)
        .await
    {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => Some(e.code().unwrap_or_default().into_owned()),
        Err(other) => panic!("`{sql}` failed other than by a refusal: {other}"),
    }
}

/// Asserts that `sql` is refused on `connection` for want of privilege (`why` says what the role
/// must not do).
async fn assert_refused(connection: &mut PgConnection, sql: &str, why: &str) {
    const INSUFFICIENT_PRIVILEGE: &str = "42501";
    assert_eq!(
        refusal(connection, sql).await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE),
        "{why}"
    );
}

#[tokio::test]
async fn a_services_role_owns_its_schema_and_cannot_touch_another_services() {
    let db = TestDb::create().await;

    // Every service migrates its schema as its own role, as the deployment's `migrate` does.
    for (schema, migrator) in services() {
        let settings = DatabaseSettings {
            url: db.service_url(schema),
            max_connections: 2,
        };
        let pool = platform::db::connect_and_migrate(&settings, schema, migrator)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{schema} migrates as {}: {e}",
                    testkit::db::service_role(schema)
                )
            });
        pool.close().await;
    }

    // A table of each schema, read by the superuser.
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let mut tables = Vec::new();
    for (schema, _) in services() {
        let table: String = sqlx::query_scalar(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> '_sqlx_migrations' ORDER BY tablename LIMIT 1",
        )
        .bind(schema)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        let owner: String = sqlx::query_scalar(
            "SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
        )
        .bind(schema)
        .bind(&table)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            owner,
            testkit::db::service_role(schema),
            "{schema}.{table}'s owner"
        );
        tables.push((schema, table));
    }

    for (schema, _) in services() {
        let role = testkit::db::service_role(schema);
        let mut connection = PgConnection::connect(&db.service_url(schema))
            .await
            .unwrap();
        for (other_schema, table) in &tables {
            let select = format!("SELECT * FROM \"{other_schema}\".\"{table}\" LIMIT 1");
            let create = format!("CREATE TABLE \"{other_schema}\".intruder (x int)");
            if *other_schema == schema {
                assert_eq!(
                    refusal(&mut connection, &select).await,
                    None,
                    "{role} reads its own {table}"
                );
                continue;
            }
            let delete = format!("DELETE FROM \"{other_schema}\".\"{table}\"");
            for (sql, must_not) in [
                (&select, format!("read {other_schema}.{table}")),
                (&delete, format!("write {other_schema}.{table}")),
                (&create, format!("create in {other_schema}")),
            ] {
                assert_refused(&mut connection, sql, &format!("{role} must not {must_not}")).await;
            }
        }
        for (sql, must_not) in [
            (
                "CREATE SCHEMA squatter",
                "make schemas (a service's schema cannot be taken before it starts)",
            ),
            ("CREATE TABLE public.stray (x int)", "create in public"),
        ] {
            assert_refused(&mut connection, sql, &format!("{role} must not {must_not}")).await;
        }
    }
}

#[tokio::test]
async fn the_role_script_hands_a_schema_made_by_one_shared_user_to_its_service() {
    // A deployment from before the roles: every schema made by one user.
    let db = TestDb::create().await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("DROP SCHEMA notifier CASCADE")
        .execute(&mut admin)
        .await
        .unwrap();
    let as_admin = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 2,
    };
    platform::db::connect_and_migrate(&as_admin, notifier::SCHEMA, &notifier::MIGRATOR)
        .await
        .unwrap()
        .close()
        .await;
    let mut notifier_role = PgConnection::connect(&db.service_url(notifier::SCHEMA))
        .await
        .unwrap();
    assert!(
        refusal(
            &mut notifier_role,
            "SELECT * FROM notifier._sqlx_migrations"
        )
        .await
        .is_some(),
        "before the script the notifier's role cannot use the schema"
    );

    sqlx::raw_sql(testkit::db::ROLES_SQL)
        .execute(&mut admin)
        .await
        .unwrap();

    assert_eq!(
        refusal(
            &mut notifier_role,
            "SELECT * FROM notifier._sqlx_migrations"
        )
        .await,
        None,
        "after it, the schema and its tables are the notifier's"
    );
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'notifier' AND tableowner <> 'connecx_notifier'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(others, 0, "every table changed hands");
    // And the service runs on it as its role: migrations find nothing to do, writes work.
    let settings = DatabaseSettings {
        url: db.service_url(notifier::SCHEMA),
        max_connections: 2,
    };
    platform::db::connect_and_migrate(&settings, notifier::SCHEMA, &notifier::MIGRATOR)
        .await
        .expect("the notifier starts as its role on the handed-over schema")
        .close()
        .await;
}
