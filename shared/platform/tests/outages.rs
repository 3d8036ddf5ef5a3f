//! Outage mails with several replicas (against the real database and broker): each replica has
//! its own view of a connection, yet the managers hear of an outage once and of its end once —
//! also when the replicas see the end at different times, and when a replica's last answer is
//! older than the outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use contracts::{AccessSystem, Building, DoubleBookingPolicy, Event};
use platform::amqp::Publisher;
use platform::bulkhead::{Bulkheads, CallObserver, ConnectionSettings};
use platform::config::AmqpSettings;
use platform::outages::OutageWatch;
use testkit::{TestBroker, TestDb};

const ENDPOINT: &str = "http://salto.harbour.example";

fn harbour() -> Building {
    Building {
        id: "harbour".into(),
        name: "Harbour View".into(),
        timezone: "Australia/Sydney".into(),
        manager_emails: vec!["manager@harbour.example".into()],
        ipassan_site: None,
        double_booking_policy: DoubleBookingPolicy::Auto,
        connection_versions: Default::default(),
    }
}

/// One replica's bulkheads and outage watch, on the shared database and broker.
struct Replica {
    bulkheads: Arc<Bulkheads>,
    watch: OutageWatch,
}

impl Replica {
    fn new(pool: &sqlx::PgPool, broker: &TestBroker, alert_secs: u64) -> Replica {
        let settings = ConnectionSettings {
            max_in_flight: 4,
            breaker_failures: 1,
            breaker_open_secs: 1,
            outage_alert_secs: alert_secs,
            ..ConnectionSettings::default()
        };
        let bulkheads = Arc::new(Bulkheads::new(AccessSystem::Salto, &settings));
        let publisher = Publisher::new(
            &AmqpSettings {
                url: broker.url.clone(),
                prefetch: 1,
                delivery_limit: 5,
                drain_timeout_secs: 30,
            },
            "outages-test",
        );
        let watch = OutageWatch {
            pool: pool.clone(),
            publisher,
            bulkheads: Arc::clone(&bulkheads),
        };
        Replica { bulkheads, watch }
    }

    /// A call of harbour's booking that failed, or that got an answer.
    async fn call(&self, answered: bool) {
        let bulkhead = self.bulkheads.of("harbour-salto", ENDPOINT);
        // The admission remembers the building; while the breaker is open the call is not made.
        if bulkhead.admit(Some(&harbour())).await.is_ok() {
            if answered {
                bulkhead.answered();
            } else {
                bulkhead.failed("connect timeout");
            }
        }
    }
}

async fn outage_table(db: &TestDb) -> sqlx::PgPool {
    let pool = db.pool("public").await;
    sqlx::raw_sql(
        "CREATE TABLE connection_outages (
             id bigserial PRIMARY KEY, building_id text NOT NULL, endpoint text NOT NULL,
             failing_since timestamptz NOT NULL, last_error text NOT NULL,
             announced_at timestamptz NOT NULL DEFAULT now(), recovered_at timestamptz);
         CREATE UNIQUE INDEX connection_outages_open ON connection_outages (building_id)
             WHERE recovered_at IS NULL;",
    )
    .execute(&pool)
    .await
    .expect("the outage table");
    pool
}

#[tokio::test]
async fn replicas_seeing_an_outage_end_at_different_times_tell_the_managers_once_each_way() {
    let db = TestDb::create().await;
    let broker = TestBroker::create().await;
    let pool = outage_table(&db).await;
    let mut health = broker.tap("connection.#").await;
    let (a, b) = (
        Replica::new(&pool, &broker, 1),
        Replica::new(&pool, &broker, 1),
    );

    // A answered before the outage: an answer older than the announcement ends nothing.
    a.call(true).await;
    b.call(false).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.call(false).await;
    b.watch.look().await.unwrap();
    a.watch.look().await.unwrap();
    let down = health.next(Duration::from_secs(5)).await.expect("down");
    assert!(matches!(down.event, Event::ConnectionDown(_)), "{down:?}");
    assert!(
        health.next(Duration::from_millis(300)).await.is_none(),
        "A's old answer ended the outage"
    );

    // The system answers A again, while B has seen only failures so far (a moment ago).
    a.call(true).await;
    a.watch.look().await.unwrap();
    b.call(false).await;
    b.watch.look().await.unwrap();
    a.watch.look().await.unwrap();
    let up = health
        .next(Duration::from_secs(5))
        .await
        .expect("recovered");
    assert!(matches!(up.event, Event::ConnectionRecovered(_)), "{up:?}");
    assert!(
        health.next(Duration::from_millis(300)).await.is_none(),
        "B, still seeing the old outage's failures, announced it again"
    );

    // B keeps failing beyond the alert time after the recovery: a new outage, told once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.call(false).await;
    b.watch.look().await.unwrap();
    b.watch.look().await.unwrap();
    let again = health
        .next(Duration::from_secs(5))
        .await
        .expect("down again");
    assert!(matches!(again.event, Event::ConnectionDown(_)), "{again:?}");
    assert!(health.next(Duration::from_millis(300)).await.is_none());
}
