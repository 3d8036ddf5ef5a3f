//! booking-api create (`BENCH_ONLY=create`): `POST /v1/visitor-bookings` over HTTP by 200
//! residents, [`CONCURRENCY`] at a time, against the raw transaction that stores the same two
//! rows. Target ≥ 60 %. For information: the same create with the relay looking again as soon as
//! a round ends (before `CONNECX__OUTBOX__LINGER_MS`), booking-api's former statements without
//! HTTP, the same work in four statements, and the floors: those four behind a bare axum handler,
//! and the same with booking-api's relay publishing their events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use booking_api::outbox::{OutboxSettings, Relay, RelayWake};
use contracts::{Envelope, Event, Role};
use platform::amqp::Publisher;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use testkit::{TestBroker, TestDb};
use tests::{IPASSAN_SITE, tomorrow_evening};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{
    BENCH_RESIDENTS, bench_resident, bench_resident_body, post_json, visitor_booking_body,
};
use crate::cpu::CpuMeter;
use crate::setup::{
    BUILDING, DEFAULT_POOL, RAW_RUNS, amqp, booking_api_settings, declare_event_sink, median,
    run_service, token, visitor_booking_created, wait_for_none,
};
use crate::table::Row;

/// Requests or transactions in flight at once, for the create rows.
const CONCURRENCY: usize = 8;

pub async fn create_ratio(n: usize) -> Vec<Row> {
    println!("booking-api create ({n} visitor bookings, {CONCURRENCY} at a time):");
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    {
        let connection = broker.connect().await;
        let channel = connection.create_channel().await.unwrap();
        declare_event_sink(&channel).await;
        let _ = connection.close(200, "bye".into()).await;
    }
    // The directory is registered through booking-api itself; then booking-api stops, so that
    // its relay does not publish the raw runs' outbox rows while they are timed.
    let (api, stop, running) = start_booking_api(booking_api_settings(&db, &broker)).await;
    seed_booking_api(&reqwest::Client::new(), &api).await;
    stop.cancel();
    running.await.unwrap();

    // Raw: the same two rows booking-api writes for a booking, in one transaction, on a pool as
    // large as booking-api's, with booking-api's schema and indexes.
    let options: PgConnectOptions = db.url.parse().unwrap();
    let raw_pool = PgPoolOptions::new()
        .max_connections(DEFAULT_POOL)
        .connect_with(options.options([("search_path", "booking")]))
        .await
        .unwrap();
    let mut rates = Vec::new();
    for _ in 0..RAW_RUNS {
        let pool = raw_pool.clone();
        rates.push(time_statements(&db, pool, "raw transaction", n, raw_booking_transaction).await);
    }
    let raw = median(rates);
    // What booking-api's create asks of PostgreSQL, without HTTP around it: where the time goes.
    let api_sql = time_statements(
        &db,
        raw_pool.clone(),
        "booking-api's statements",
        n,
        api_create_statements,
    )
    .await;
    let fewer_sql = time_statements(
        &db,
        raw_pool.clone(),
        "the same in fewer statements",
        n,
        fewer_create_statements,
    )
    .await;
    let http = reqwest::Client::new();
    let bare_http = bare_http_rate(&db, raw_pool.clone(), &http, n, None).await;
    let bare_published = bare_http_rate(&db, raw_pool.clone(), &http, n, Some(&broker)).await;
    raw_pool.close().await;

    // Before: a relay that looks again as soon as a round ends; after: as shipped, it lingers
    // (`CONNECX__OUTBOX__LINGER_MS`) after a round that was not full.
    let before = api_create_rate(&db, &broker, &http, n, "booking-api create, no linger", 0).await;
    let measured = api_create_rate(&db, &broker, &http, n, "booking-api create", 5).await;
    let row = Row::ratio(
        "booking-api create (HTTP, 8 conc.)",
        "/s",
        measured,
        raw,
        60.0,
    );
    let before = Row::floor("  before: relay without linger", before, raw, "/s");
    let statements = Row::floor("  its former SQL (no HTTP, no relay)", api_sql, raw, "/s");
    let fewer = Row::floor("  that SQL in 4 round trips", fewer_sql, raw, "/s");
    let floor = Row::floor(
        "  floor: those 4 behind a bare handler",
        bare_http,
        raw,
        "/s",
    );
    let floor_published = Row::floor(
        "  floor: the same, its events published",
        bare_published,
        raw,
        "/s",
    );
    vec![row, before, statements, fewer, floor, floor_published]
}

/// `POST /v1/visitor-bookings` `n` times, [`CONCURRENCY`] at a time, spread over the
/// [`BENCH_RESIDENTS`], against a booking-api with the shipped limits and the relay lingering
/// `linger_ms`: per second, with its CPU printed under `label`.
///
/// The table keeps the SQL rows' bookings (tens of thousands) and is analysed with them, as a
/// deployment's table is: analysed while empty, PostgreSQL's cached plans would scan the whole
/// table for each resident's count as it grows. They are all Ana's, so they are first made a
/// deployment's history ([`as_history`]). Earlier runs' bookings of the bench residents are
/// removed (they would count against the limit), and the outbox emptied (the relay would publish
/// the SQL rows' events).
async fn api_create_rate(
    db: &TestDb,
    broker: &TestBroker,
    http: &reqwest::Client,
    n: usize,
    label: &str,
    linger_ms: u64,
) -> f64 {
    let check = db.pool("booking").await;
    sqlx::query("DELETE FROM visitor_bookings WHERE resident_id LIKE 'bench-%'")
        .execute(&check)
        .await
        .unwrap();
    as_history(&check).await;
    sqlx::query("TRUNCATE outbox")
        .execute(&check)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE").execute(&check).await.unwrap();

    let mut settings = booking_api_settings(db, broker);
    // A resident's live bookings are counted on every create: the shipped limit bounds that
    // count, as it does in a deployment.
    settings.limits.max_live_bookings =
        booking_api::settings::LimitsSettings::default().max_live_bookings;
    settings.outbox.linger_ms = linger_ms;
    let (api, stop, running) = start_booking_api(settings).await;
    let residents: Vec<String> = (0..BENCH_RESIDENTS)
        .map(|k| token(Role::Resident, &bench_resident(k), Some("apt-501")))
        .collect();
    let (starts_at, ends_at) = tomorrow_evening();
    let cpu = CpuMeter::start(&db.name);
    let http = http.clone();
    let measured = run_concurrently(n, move |i| {
        let http = http.clone();
        let url = format!("{api}/v1/visitor-bookings");
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        let resident = residents[i % residents.len()].clone();
        async move {
            let response = post_json(&http, url, &resident, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            let _ = response.bytes().await.unwrap();
        }
    })
    .await;
    println!("{}", cpu.report(label, n));
    // The relay published every event meanwhile (into a sink queue): nothing was refused.
    all_published_once(&check).await;
    check.close().await;
    stop.cancel();
    running.await.unwrap();
    measured
}

/// Turns the SQL rows' bookings (all Ana's, tens of thousands, live) into a deployment's history:
/// ended, and spread over 2,000 former residents. With one resident holding every row, the
/// statistics price the generic plan of each create's count for her (a scan of her bookings),
/// above the plan made for the caller, and PostgreSQL plans every create's count anew: 130 µs of
/// its CPU a create, measured, that a deployment, where no resident holds more live bookings than
/// the limit, does not pay.
async fn as_history(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO residents (building_id, id, name, email, apartment_id)
         SELECT $1, 'former-' || g, 'Former ' || g, 'former' || g || '@example.com', 'apt-501'
           FROM generate_series(0, 1999) AS g
         ON CONFLICT DO NOTHING",
    )
    .bind(BUILDING)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE visitor_bookings
            SET resident_id = 'former-' || (abs(hashtext(id::text)) % 2000),
                starts_at = starts_at - interval '400 days',
                ends_at = ends_at - interval '400 days'
          WHERE resident_id = 'ana'",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Waits until the relay has published every stored event, each at its first attempt.
async fn all_published_once(pool: &PgPool) {
    wait_for_none(
        pool,
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL OR attempts > 1",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |unsent| format!("{unsent} events not published once"),
    )
    .await;
}

/// booking-api with `settings`, running: its URL, and the token and task that stop it.
async fn start_booking_api(
    settings: booking_api::Settings,
) -> (String, CancellationToken, JoinHandle<()>) {
    let app = booking_api::Application::build(settings)
        .await
        .expect("booking-api builds");
    let api = format!("http://127.0.0.1:{}", app.port());
    let (stop, running) = run_service(|stop| async move {
        app.run_until_stopped(async move { stop.cancelled().await })
            .await
            .expect("booking-api runs");
    });
    (api, stop, running)
}

/// `statements(pool, i)` for `0..n`, [`CONCURRENCY`] at a time, with its CPU printed under
/// `label`: per second.
async fn time_statements<F, Fut>(
    db: &TestDb,
    pool: PgPool,
    label: &str,
    n: usize,
    statements: F,
) -> f64
where
    F: Fn(PgPool, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let cpu = CpuMeter::start(&db.name);
    let rate = run_concurrently(n, move |i| statements(pool.clone(), i)).await;
    println!("{}", cpu.report(label, n));
    rate
}

/// [`api_create_statements`]' work in four statements instead of seven (and no read-back): the
/// building and the resident in one query, the booking (the answer from its `RETURNING`), the
/// outbox row, and the commit. No NOTIFY: booking-api wakes its relay in process.
async fn fewer_create_statements(pool: PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT b.id, b.name, b.timezone, b.manager_emails, b.ipassan_site,
                b.double_booking_policy, r.id, r.name, r.email, r.apartment_id,
                r.ipassan_person_id
           FROM buildings b LEFT JOIN residents r ON r.building_id = b.id AND r.id = $2
          WHERE b.id = $1",
    )
    .bind(BUILDING)
    .bind("ana")
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Row).await;
    insert_outbox_row(&mut tx, &envelope).await;
    tx.commit().await.unwrap();
}

/// The statements booking-api's `POST /v1/visitor-bookings` ran before its creation took fewer
/// round trips (no Idempotency-Key, no `Prefer: wait`), in their order: look up the building and
/// the resident, insert the booking (returning it) and its outbox row, wake the relay, commit;
/// then read the booking back for the answer.
async fn api_create_statements(pool: PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT id, name, timezone, manager_emails, ipassan_site, double_booking_policy
           FROM buildings WHERE id = $1",
    )
    .bind(BUILDING)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "SELECT id, name, email, apartment_id, ipassan_person_id
           FROM residents WHERE building_id = $1 AND id = $2",
    )
    .bind(BUILDING)
    .bind("ana")
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Row).await;
    insert_outbox_row(&mut tx, &envelope).await;
    sqlx::query("SELECT pg_notify('booking_outbox', '')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("SELECT * FROM visitor_bookings WHERE id = $1")
        .bind(envelope.booking_id)
        .fetch_one(&pool)
        .await
        .unwrap();
}

/// The visitor-booking insert of booking-api's create, with its `RETURNING *` or without.
macro_rules! insert_visitor_booking_sql {
    () => {
        "INSERT INTO visitor_bookings (id, building_id, resident_id, visitor_name, visitor_email,
             provide_access, starts_at, ends_at, state, version, access_status,
             booked_by_user_id, booked_by_role)
         VALUES ($1, $2, 'ana', $3, $4, true, $5, $6, 'booked', 1, 'pending', 'ana', 'resident')"
    };
}

/// Whether [`insert_visitor_booking`] reads the row back (`RETURNING *`, as booking-api does).
#[derive(Clone, Copy)]
enum Returning {
    Row,
    Nothing,
}

/// Inserts the booking of `envelope` (a `visitor_booking.created`) in `tx`, for Ana.
async fn insert_visitor_booking(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    envelope: &Envelope,
    returning: Returning,
) {
    let Event::VisitorBookingCreated(booking) = &envelope.event else {
        unreachable!()
    };
    let sql = match returning {
        Returning::Row => concat!(insert_visitor_booking_sql!(), "\n         RETURNING *"),
        Returning::Nothing => insert_visitor_booking_sql!(),
    };
    let query = sqlx::query(sql)
        .bind(envelope.booking_id)
        .bind(BUILDING)
        .bind(&booking.visitor.name)
        .bind(&booking.visitor.email)
        .bind(booking.window.starts_at)
        .bind(booking.window.ends_at);
    match returning {
        Returning::Row => {
            query.fetch_one(&mut **tx).await.unwrap();
        }
        Returning::Nothing => {
            query.execute(&mut **tx).await.unwrap();
        }
    }
}

/// Inserts `envelope`'s outbox row in `tx` (no wake-up of the relay).
async fn insert_outbox_row(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, envelope: &Envelope) {
    sqlx::query(
        "INSERT INTO outbox (event_id, booking_id, event_type, envelope) VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.event_id)
    .bind(envelope.booking_id)
    .bind(envelope.routing_key())
    .bind(Json(envelope))
    .execute(&mut **tx)
    .await
    .unwrap();
}

/// Registers the building, apartment and residents the bookings are for (Ana for the SQL rows,
/// [`BENCH_RESIDENTS`] for booking-api's).
async fn seed_booking_api(http: &reqwest::Client, api: &str) {
    let manager = token(Role::Manager, "manager-1", None);
    let puts = [
        (
            format!("/v1/buildings/{BUILDING}"),
            json!({"name": "Harbour View", "timezone": "Australia/Sydney",
                   "manager_emails": ["manager@harbour.example"],
                   "ipassan_site": IPASSAN_SITE, "double_booking_policy": "auto"}),
        ),
        (
            "/v1/apartments/apt-501".into(),
            json!({"access_control_id": "501-56"}),
        ),
        (
            "/v1/residents/ana".into(),
            json!({"name": "Ana Lee", "email": "ana@residents.example",
                   "apartment_id": "apt-501", "ipassan_person_id": "p-ana"}),
        ),
    ];
    let residents = (0..BENCH_RESIDENTS).map(|k| {
        (
            format!("/v1/residents/{}", bench_resident(k)),
            bench_resident_body(k),
        )
    });
    for (path, body) in puts.into_iter().chain(residents) {
        let response = http
            .put(format!("{api}{path}"))
            .bearer_auth(&manager)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "seeding {path}: {}",
            response.status()
        );
    }
}

/// What booking-api stores for a new visitor booking, without the API around it.
async fn raw_booking_transaction(pool: PgPool, i: usize) {
    let envelope = visitor_booking_created(i);
    let mut tx = pool.begin().await.unwrap();
    insert_visitor_booking(&mut tx, &envelope, Returning::Nothing).await;
    insert_outbox_row(&mut tx, &envelope).await;
    tx.commit().await.unwrap();
}

/// Runs `op(0..n)` with [`CONCURRENCY`] in flight; operations per second.
async fn run_concurrently<F, Fut>(n: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut lanes = Vec::new();
    for _ in 0..CONCURRENCY {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        lanes.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The least an HTTP create can cost here: [`fewer_create_statements`] behind a bare axum handler
/// (booking-api's server crate) that reads the JSON body and answers 201 with a small JSON body —
/// no token, no validation, no limits — POSTed by the same client, [`CONCURRENCY`] at a time; per
/// second. With `relay`, booking-api's outbox relay (its shipped settings, on the same pool)
/// publishes the events meanwhile, woken after each commit as booking-api's requests wake it;
/// without, nothing is published.
async fn bare_http_rate(
    db: &TestDb,
    pool: PgPool,
    http: &reqwest::Client,
    n: usize,
    relay: Option<&TestBroker>,
) -> f64 {
    use axum::extract::{Json as Body, State};
    use axum::http::StatusCode;

    async fn create(
        State((pool, next, wake)): State<(PgPool, Arc<AtomicUsize>, RelayWake)>,
        Body(body): Body<serde_json::Value>,
    ) -> (StatusCode, Body<serde_json::Value>) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        fewer_create_statements(pool, i).await;
        wake.committed();
        (
            StatusCode::CREATED,
            Body(json!({"visitor": body["visitor"], "state": "booked"})),
        )
    }

    // The earlier rows' events are not this row's to publish.
    sqlx::query("TRUNCATE outbox").execute(&pool).await.unwrap();
    let wake = RelayWake::default();
    let stop = CancellationToken::new();
    let relay = match relay {
        Some(broker) => {
            let publisher = Publisher::new(&amqp(broker), "bench.bare-relay");
            publisher.check().await.unwrap();
            let relay = Relay::new(
                pool.clone(),
                publisher,
                wake.clone(),
                OutboxSettings::default(),
            );
            Some(tokio::spawn(relay.run(stop.clone())))
        }
        None => None,
    };
    let label = match relay {
        Some(_) => "those statements behind a bare handler, events published",
        None => "those statements behind a bare handler",
    };
    let app = axum::Router::new()
        .route("/v1/visitor-bookings", axum::routing::post(create))
        .with_state((pool.clone(), Arc::new(AtomicUsize::new(0)), wake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/visitor-bookings",
        listener.local_addr().unwrap()
    );
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        })
    };
    let resident = token(Role::Resident, "ana", Some("apt-501"));
    let (starts_at, ends_at) = tomorrow_evening();
    let cpu = CpuMeter::start(&db.name);
    let http = http.clone();
    let rate = run_concurrently(n, move |i| {
        let (http, url, resident) = (http.clone(), url.clone(), resident.clone());
        let body = visitor_booking_body(i, &starts_at, &ends_at);
        async move {
            let response = post_json(&http, url, &resident, &body).await;
            assert_eq!(response.status().as_u16(), 201);
            let _ = response.bytes().await.unwrap();
        }
    })
    .await;
    println!("{}", cpu.report(label, n));
    if let Some(relay) = relay {
        all_published_once(&pool).await;
        stop.cancel();
        relay.await.unwrap();
    }
    stop.cancel();
    server.await.unwrap();
    rate
}
