//! A service's start (`platform::db::start_waiting_out_lost_connections`, as every `main` runs
//! it) waits out a database that drops its connections for a moment (PostgreSQL
//! restarting, sessions ended by an administrator) instead of exiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use platform::config::DatabaseSettings;
use testkit::TestDb;
use tokio::net::{TcpListener, TcpStream};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./tests/migrations");

/// A TCP proxy to the local PostgreSQL that hangs up on the first `drop_first` connections, as a
/// restarting server does, and forwards the rest.
async fn flaky_proxy(drop_first: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) < drop_first {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (address, accepted)
}

#[tokio::test]
async fn connections_dropped_while_starting_are_waited_out() {
    let db = TestDb::create().await;
    let (proxy, accepted) = flaky_proxy(2).await;
    let settings = DatabaseSettings {
        url: db.url.replace("127.0.0.1:5432", &proxy),
        max_connections: 2,
    };
    assert_ne!(
        settings.url, db.url,
        "the test database is on 127.0.0.1:5432"
    );

    let pool = platform::db::start_waiting_out_lost_connections(|| {
        platform::db::connect_and_migrate(&settings, "start_check", &MIGRATOR)
    })
    .await
    .expect("the start waits out two dropped connections");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'start_check' AND tablename = 'started'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 1, "the migrations ran");
    assert!(
        accepted.load(Ordering::SeqCst) > 2,
        "the dropped connections were tried"
    );
}

#[tokio::test]
async fn a_database_that_stays_away_still_ends_the_start_with_its_error() {
    let (proxy, accepted) = flaky_proxy(usize::MAX).await;
    let settings = DatabaseSettings {
        url: format!("postgres://postgres@{proxy}/postgres?sslmode=disable"),
        max_connections: 1,
    };
    let error = platform::db::start_waiting_out_lost_connections(|| {
        platform::db::connect_and_migrate(&settings, "start_check", &MIGRATOR)
    })
    .await
    .expect_err("no database, no start");
    assert!(error.is_connection_lost(), "{error}");
    assert!(
        accepted.load(Ordering::SeqCst) >= platform::db::STARTUP_ATTEMPTS as usize,
        "each attempt tried to connect"
    );
}
