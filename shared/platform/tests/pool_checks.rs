//! When a service's pool checks a connection before handing it out
//! (`platform::db::connect_pool`): not when it was in use a moment ago (a round trip saved on
//! every transaction under load), always once it has lain idle, so that a session the server
//! ended meanwhile is replaced instead of failing the next statement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use platform::config::DatabaseSettings;
use sqlx::PgPool;
use testkit::TestDb;

/// A pool of one connection on `db`, as a service makes it.
async fn one_connection_pool(db: &TestDb) -> PgPool {
    let settings = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 1,
    };
    platform::db::connect_pool(&settings, "pool_check", 1)
        .await
        .unwrap()
}

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Ends the session `pid` as an administrator (or a failover) would, waiting until it is gone.
async fn end_session(db: &TestDb, pid: i32) {
    let admin = db.pool("public").await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended, "session {pid} ended");
    admin.close().await;
}

#[tokio::test]
async fn a_connection_ended_while_it_lay_idle_is_replaced_before_use() {
    let db = TestDb::create().await;
    let pool = one_connection_pool(&db).await;
    let first = backend_pid(&pool).await.unwrap();
    end_session(&db, first).await;

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second = backend_pid(&pool)
        .await
        .expect("the idle connection was checked and replaced, not handed out dead");
    assert_ne!(second, first);
}

#[tokio::test]
async fn a_connection_used_a_moment_ago_is_handed_out_unchecked_and_dropped_if_it_fails() {
    let db = TestDb::create().await;
    let pool = one_connection_pool(&db).await;
    let first = backend_pid(&pool).await.unwrap();
    end_session(&db, first).await;

    // Within the second: no check, so the statement meets the ended session, as any statement
    // does whose connection is lost while it runs.
    let lost = backend_pid(&pool)
        .await
        .expect_err("handed out without a check");
    assert!(platform::db::connection_lost(&lost), "{lost}");
    // The failed connection did not go back into the pool.
    let second = backend_pid(&pool).await.unwrap();
    assert_ne!(second, first);
}
