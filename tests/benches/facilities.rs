//! Facility-booking benchmark (issue 5). Prints figures; asserts nothing about speed.
//!
//! 1. End to end: N facility bookings POSTed by the manager at a steady rate to booking-api, each
//!    for its own (apartment, facility) pair so none is a double booking, the whole system running
//!    with a zero-latency Salto simulator. For each booking: POST sent → `facility_access.granted`
//!    seen on the broker (a tap on `connecx.events`). Prints grants/s, p50, p99, max.
//! 2. The nightly cleaner on a ledger loaded straight into salto-sync's tables: H held permissions
//!    over many buildings, access levels and zones, E of them dated yesterday, Salto (the
//!    simulator) holding the same lists and every booking's snapshot stored. One cleaner pass
//!    (`Application::cleaner().tick()`, the clock at 00:06 building time on the due date) is
//!    timed, with reconciliation off (so the pass only does the clearing), for
//!    10k/100k, 1k/100k and 10k/20k: the time must follow the expired, not the held. A last row
//!    shows the pass with reconciliation on (the default), which reads every access level.
//!
//! `cargo bench -p tests --bench facilities` (env: BENCH_N=300, BENCH_RATE=50, BENCH_HELD=100000,
//! BENCH_EXPIRED=10000, BENCH_RECONCILE=1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use contracts::{
    Apartment, BookingState, BookingWindow, Building, DoubleBookingPolicy, Envelope, Event,
    Facility, FacilityBooking,
};
use platform::config::RetrySettings;
use salto_sync::{AuthKind, CleanerSettings, ManualClock, SaltoSettings};
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use testkit::{TestBroker, TestDb};
use tests::{Stack, tomorrow_evening};
use uuid::Uuid;

use common::{booked_by_manager, env_number, ms, percentile, post_json, print_latencies};

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_N", 300);
    let rate = env_number("BENCH_RATE", 50);
    let held = env_number("BENCH_HELD", 100_000);
    let expired = env_number("BENCH_EXPIRED", 10_000);
    let reconcile = env_number("BENCH_RECONCILE", 1) != 0;
    println!(
        "facility-booking benchmark: {n} bookings at {rate}/s; cleaner on {held} held, {expired} expired"
    );
    grants(n, rate).await;
    cleaner_scaling(held, expired, reconcile).await;
}

// ---------------------------------------------------------------------------------------------
// 1. POST → granted, end to end.

/// Facilities (Salto zones) registered for the bench; apartments are added until every booking
/// has its own (apartment, facility) pair.
const BENCH_FACILITIES: usize = 10;

fn bench_apartment(a: usize) -> (String, String) {
    (format!("apt-bench-{a:04}"), format!("BENCH-{a:04}"))
}

fn bench_facility(f: usize) -> (String, String) {
    (format!("bench-room-{f:02}"), format!("BENCH-ZONE-{f:02}"))
}

/// Registers the bench's apartments and facilities in booking-api (as the manager) and the matching
/// access levels and zones in Salto (one seed: the simulator's seed adds, by ID).
async fn seed_directory(stack: &Stack, apartments: usize) {
    let manager = stack.manager();
    let mut puts = Vec::new();
    for a in 0..apartments {
        let (id, level) = bench_apartment(a);
        puts.push((
            format!("/v1/apartments/{id}"),
            json!({"access_control_id": level}),
        ));
    }
    for f in 0..BENCH_FACILITIES {
        let (id, zone) = bench_facility(f);
        puts.push((
            format!("/v1/facilities/{id}"),
            json!({"name": format!("Bench room {f}"), "access_control_facility_id": zone}),
        ));
    }
    for (path, body) in puts {
        let (status, answer) = stack
            .send(reqwest::Method::PUT, &path, &manager, Some(body))
            .await;
        assert!(
            (200..300).contains(&status),
            "seeding {path}: {status} {answer}"
        );
    }
    let groups: Vec<Value> = (0..apartments)
        .map(|a| json!({"ext_id": bench_apartment(a).1, "name": format!("Bench apartment {a}")}))
        .collect();
    let zones: Vec<Value> = (0..BENCH_FACILITIES)
        .map(|f| json!({"ext_id": bench_facility(f).1, "name": format!("Bench room {f}")}))
        .collect();
    let seeded = stack
        .http
        .post(format!(
            "{}/_sim/seed",
            stack.salto_sim.url().trim_end_matches('/')
        ))
        .json(&json!({"groups": groups, "zones": zones}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "salto-sim seeded");
}

async fn grants(n: usize, rate: usize) {
    let stack = Stack::start().await;
    let apartments = n.div_ceil(BENCH_FACILITIES);
    seed_directory(&stack, apartments).await;

    // Every result, with when it reached the bench, until all N are granted (or none comes for
    // a minute).
    let mut tap = stack.broker.tap("facility_access.#").await;
    let watcher = tokio::spawn(async move {
        let mut granted: HashMap<Uuid, Instant> = HashMap::new();
        let mut others: Vec<(String, Uuid)> = Vec::new();
        while granted.len() < n {
            let Some(envelope) = tap.next(Duration::from_secs(60)).await else {
                break;
            };
            let at = Instant::now();
            match envelope.routing_key() {
                "facility_access.granted.v1" => {
                    granted.entry(envelope.booking_id).or_insert(at);
                }
                other => others.push((other.to_owned(), envelope.booking_id)),
            }
        }
        (granted, others)
    });

    let (starts_at, ends_at) = tomorrow_evening();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let token = stack.manager();
    let started = Instant::now();
    let mut posts = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        // Consecutive bookings go to different apartments (access levels), as real traffic does;
        // pair (i mod A, i div A) is unique for i < N ≤ A × F.
        let (apartment, _) = bench_apartment(i % apartments);
        let (facility, _) = bench_facility(i / apartments);
        let body = json!({"facility_id": facility, "apartment_id": apartment,
                          "starts_at": starts_at, "ends_at": ends_at});
        let http = stack.http.clone();
        let url = format!("{}/v1/facility-bookings", stack.api);
        let token = token.clone();
        posts.push(tokio::spawn(async move {
            let posted_at = Instant::now();
            let response = post_json(&http, url, &token, &body).await;
            let answered = posted_at.elapsed();
            let status = response.status().as_u16();
            let booking: Value = response.json().await.unwrap();
            assert_eq!(status, 201, "{booking}");
            let id: Uuid = booking["id"].as_str().unwrap().parse().unwrap();
            (id, posted_at, answered)
        }));
    }
    let mut posted = Vec::with_capacity(n);
    for post in posts {
        posted.push(post.await.unwrap());
    }
    let (granted, others) = watcher.await.unwrap();
    assert!(
        others.is_empty(),
        "only grants were expected: {:?}",
        &others[..others.len().min(5)]
    );
    let mut latencies = Vec::with_capacity(n);
    let mut answers = Vec::with_capacity(n);
    let mut last_grant = started;
    for (id, posted_at, answered) in &posted {
        let at = *granted
            .get(id)
            .unwrap_or_else(|| panic!("booking {id} was never granted"));
        latencies.push(at.duration_since(*posted_at));
        answers.push(*answered);
        last_grant = last_grant.max(at);
    }
    let in_salto: usize = {
        let sim = stack.salto_sim.state.lock();
        sim.db
            .groups
            .values()
            .filter(|g| g.ext_id.starts_with("BENCH-"))
            .map(|g| g.zones.len())
            .sum()
    };
    assert_eq!(in_salto, n, "Salto holds one permission per booking");
    latencies.sort();
    answers.sort();
    let elapsed = last_grant.duration_since(started).as_secs_f64();
    println!(
        "end to end (POST → facility_access.granted on the broker; {apartments} apartments × {BENCH_FACILITIES} facilities):"
    );
    println!("  bookings            {n} (all granted; Salto holds {in_salto} permissions)");
    println!("  offered rate        {rate}/s");
    println!("  achieved            {:.1} grants/s", n as f64 / elapsed);
    println!(
        "  POST answered p50   {:.1} ms",
        ms(percentile(&answers, 50.0))
    );
    print_latencies("granted ", &latencies);
}

// ---------------------------------------------------------------------------------------------
// 2. The nightly cleaner.

/// The local date whose clearing is timed; the expired permissions are of the day before.
fn clearing_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
}

const BUILDINGS: usize = 20;
const SYDNEY: chrono_tz::Tz = chrono_tz::Australia::Sydney;
/// The pool's timetables: (id, start, end) in seconds of the day. Bookings cycle through them.
const TIMETABLES: [(u32, u32, u32); 4] = [
    (1, 18 * 3600, 22 * 3600),
    (2, 7 * 3600, 9 * 3600),
    (3, 12 * 3600, 14 * 3600),
    (4, 9 * 3600, 17 * 3600),
];

/// What the ledger holds: `levels` access levels (apartments, spread over [`BUILDINGS`]
/// buildings) with a permission on each of `zones_per_level` zones. Every `expiry_step`-th
/// access level has one of them dated yesterday (the zone rotates); all others are dated today
/// to four weeks ahead.
#[derive(Debug, Clone, Copy)]
struct LedgerShape {
    levels: usize,
    zones_per_level: usize,
    expiry_step: usize,
}

impl LedgerShape {
    /// About `expired` expired permissions (exactly, when it divides `levels`).
    fn new(levels: usize, zones_per_level: usize, expired: usize) -> Self {
        let levels = levels.max(1);
        Self {
            levels,
            zones_per_level: zones_per_level.max(1),
            expiry_step: (levels / expired.clamp(1, levels)).max(1),
        }
    }

    fn held(&self) -> usize {
        self.levels * self.zones_per_level
    }

    fn expired(&self) -> usize {
        self.levels.div_ceil(self.expiry_step)
    }
}

struct PassFigures {
    shape: LedgerShape,
    reconcile: bool,
    seconds: f64,
    ship_requests: usize,
}

async fn cleaner_scaling(held: usize, expired: usize, with_reconcile: bool) {
    let zones = 10;
    let levels = (held / zones).max(1);
    let expired = expired.clamp(1, levels);
    let mut shapes = vec![
        (LedgerShape::new(levels, zones, expired), false),
        (LedgerShape::new(levels, zones, expired / 10), false),
        (LedgerShape::new(expired, 2, expired), false),
    ];
    if with_reconcile {
        shapes.push((LedgerShape::new(levels, zones, expired), true));
    }
    println!(
        "nightly cleaner, one pass for {} ({BUILDINGS} buildings, {} timetables, reconciliation as shown):",
        clearing_date(),
        TIMETABLES.len()
    );
    println!(
        "  {:>9} {:>9} {:>8} {:>10} {:>10} {:>11} {:>11}",
        "expired", "held", "levels", "reconcile", "seconds", "expired/s", "SHIP calls"
    );
    for (shape, reconcile) in shapes {
        let figures = cleaner_pass(shape, reconcile).await;
        println!(
            "  {:>9} {:>9} {:>8} {:>10} {:>10.2} {:>11.0} {:>11}",
            figures.shape.expired(),
            figures.shape.held(),
            figures.shape.levels,
            if figures.reconcile { "on" } else { "off" },
            figures.seconds,
            figures.shape.expired() as f64 / figures.seconds,
            figures.ship_requests
        );
    }
    println!(
        "  (each row: fresh database and Salto; verified after the pass: no row dated before {} \
         left in the ledger or Salto, the rest still held, one facility_access.expired per \
         expired booking in booking-api's results queue)",
        clearing_date()
    );
}

async fn cleaner_pass(shape: LedgerShape, reconcile: bool) -> PassFigures {
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let sim = salto_sim::RunningSim::start(0).await.unwrap();
    // Where the results go in production (publishing is mandatory: they must be routed).
    broker
        .declare_queue(&contracts::BOOKING_API_RESULTS_QUEUE, 5)
        .await;
    broker.declare_queue(&contracts::NOTIFIER_QUEUE, 5).await;

    let today = clearing_date();
    let now = SYDNEY
        .from_local_datetime(&today.and_time(NaiveTime::from_hms_opt(0, 6, 0).unwrap()))
        .single()
        .unwrap()
        .with_timezone(&Utc);
    let app = salto_sync::Application::build_with_clock(
        salto_sync::Settings {
            shared: testkit::shared_settings(
                db.url.clone(),
                broker.url.clone(),
                &RetrySettings::default().tiers.0,
            ),
            salto: Some(SaltoSettings {
                url: sim.url(),
                auth_kind: AuthKind::None,
                key: None,
                username: None,
                password: None,
                timeout_secs: 10,
            }),
            connections: Default::default(),
            secrets: platform::secrets::SecretsSettings {
                key: Some(tests::SEALING_KEY.into()),
                previous_keys: None,
            },
            cleaner: CleanerSettings {
                reconcile,
                ..CleanerSettings::default()
            },
        },
        Arc::new(ManualClock::new(now)),
    )
    .await
    .expect("salto-sync builds");

    load_ledger(
        app.pool(),
        shape,
        today,
        &salto_sync::servers::server_key(&sim.url()),
    )
    .await;
    seed_salto(&sim, app.pool(), shape).await;

    let requests_before = sim.state.lock().requests.len();
    let cleaner = app.cleaner();
    let started = Instant::now();
    let clearings = cleaner.tick().await.expect("the clearing runs");
    let seconds = started.elapsed().as_secs_f64();
    let ship_requests = sim.state.lock().requests.len() - requests_before;

    // Correctness: every expired permission is gone from the ledger and from Salto, the rest
    // stay, and each expired booking's result was published.
    let buildings: i64 = sqlx::query_scalar("SELECT count(*) FROM buildings")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(
        clearings.len(),
        buildings as usize,
        "one clearing per building"
    );
    let cleared: usize = clearings.iter().map(|c| c.expired).sum();
    assert_eq!(cleared, shape.expired());
    let left_expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM permissions WHERE local_date < $1")
            .bind(today)
            .fetch_one(app.pool())
            .await
            .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(left_expired, 0);
    assert_eq!(left as usize, shape.held() - shape.expired());
    {
        let sim = sim.state.lock();
        let zones = sim.db.groups.values().flat_map(|g| g.zones.iter());
        let (in_salto, ended) = zones.fold((0, 0), |(all, ended), z| {
            let over = z.period.is_some_and(|p| p.end.date() < today);
            (all + 1, ended + usize::from(over))
        });
        assert_eq!(ended, 0, "Salto still holds expired permissions");
        assert_eq!(in_salto, shape.held() - shape.expired());
    }
    let published = broker
        .queue_depth(contracts::BOOKING_API_RESULTS_QUEUE.name)
        .await;
    assert_eq!(published as usize, shape.expired(), "one result per expiry");

    drop(cleaner);
    app.pool().close().await;
    drop(app);
    drop_database(&db).await;
    PassFigures {
        shape,
        reconcile,
        seconds,
        ship_requests,
    }
}

/// A booking snapshot as booking-api publishes it; the rows' own fields are set in SQL.
fn snapshot_template() -> Value {
    let at = Utc::now();
    let local = at.naive_utc();
    let booking = FacilityBooking {
        building: Building {
            id: String::new(),
            name: "Bench building".into(),
            timezone: "Australia/Sydney".into(),
            manager_emails: vec!["manager@bench.example".into()],
            ipassan_site: None,
            double_booking_policy: DoubleBookingPolicy::Auto,
            connection_versions: Default::default(),
        },
        window: BookingWindow {
            starts_at: at,
            ends_at: at,
            local_starts_at: local,
            local_ends_at: local,
        },
        facility: Facility {
            id: String::new(),
            name: String::new(),
            zone_id: String::new(),
        },
        apartment: Apartment {
            id: String::new(),
            access_level_id: String::new(),
        },
        booked_by: booked_by_manager(),
        state: BookingState::Booked,
    };
    serde_json::to_value(Envelope::new(
        Uuid::nil(),
        1,
        Event::FacilityBookingCreated(booking),
    ))
    .unwrap()
}

/// Fills the ledger as months of granted bookings would have: the permissions, each booking's
/// snapshot and outcome, and the buildings. One transaction; then ANALYZE, as autovacuum would.
async fn load_ledger(pool: &sqlx::PgPool, shape: LedgerShape, today: NaiveDate, server: &str) {
    let step = shape.expiry_step as i32;
    let per_building = shape.levels.div_ceil(BUILDINGS) as i32;
    let (starts, ends): (Vec<i32>, Vec<i32>) = TIMETABLES
        .iter()
        .map(|(_, s, e)| (*s as i32, *e as i32))
        .unzip();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE bench_rows (
            g int, booking_id uuid, building_id text, access_level_id text, zone_id text,
            local_date date, timetable_id int, starts_secs int, ends_secs int) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    // Row g is access level g / Z, zone g % Z. A level l with l % step = 0 has one permission of
    // yesterday, on zone (l / step) % Z; everything else is dated today to four weeks ahead.
    sqlx::query(
        "INSERT INTO bench_rows
         SELECT g, md5('bench-booking-' || g)::uuid,
                'bench-' || lpad((l / $4)::text, 2, '0'),
                'AL-' || lpad(l::text, 6, '0'),
                'Z-' || z,
                CASE WHEN l % $3 = 0 AND z = (l / $3) % $2 THEN $5::date - 1 ELSE $5::date + g % 28 END,
                1 + g % 4, ($6::int[])[1 + g % 4], ($7::int[])[1 + g % 4]
           FROM (SELECT g, g / $2 AS l, g % $2 AS z FROM generate_series(0, $1 - 1) AS g) AS s",
    )
    .bind(shape.held() as i32)
    .bind(shape.zones_per_level as i32)
    .bind(step)
    .bind(per_building)
    .bind(today)
    .bind(&starts)
    .bind(&ends)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO permissions (building_id, access_level_id, zone_id, booking_id, version,
                                  local_date, starts_secs, ends_secs, timetable_id, period_start,
                                  period_end, server)
         SELECT building_id, access_level_id, zone_id, booking_id, 1, local_date, starts_secs,
                ends_secs, timetable_id, local_date + time '00:00:00', local_date + time '23:59:59',
                $1
           FROM bench_rows",
    )
    .bind(server)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO booking_outcomes (booking_id, version, outcome)
         SELECT booking_id, 1, 'granted' FROM bench_rows",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO booking_snapshots (booking_id, version, event_type, envelope)
         SELECT r.booking_id, 1, 'facility_booking.created.v1',
                $1::jsonb || jsonb_build_object(
                  'booking_id', r.booking_id,
                  'event_id', md5('bench-event-' || r.g)::uuid,
                  'data', ($1::jsonb -> 'data') || jsonb_build_object(
                    'building', ($1::jsonb #> '{data,building}') || jsonb_build_object('id', r.building_id),
                    'window', jsonb_build_object(
                      'starts_at', (r.local_date + make_interval(secs => r.starts_secs)) AT TIME ZONE 'Australia/Sydney',
                      'ends_at', (r.local_date + make_interval(secs => r.ends_secs)) AT TIME ZONE 'Australia/Sydney',
                      'local_starts_at', r.local_date + make_interval(secs => r.starts_secs),
                      'local_ends_at', r.local_date + make_interval(secs => r.ends_secs)),
                    'facility', jsonb_build_object('id', lower(r.zone_id), 'name', r.zone_id, 'zone_id', r.zone_id),
                    'apartment', jsonb_build_object('id', 'apt-' || lower(r.access_level_id),
                                                    'access_level_id', r.access_level_id)))
           FROM bench_rows AS r",
    )
    .bind(snapshot_template())
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO buildings (building_id, timezone)
         SELECT DISTINCT building_id, 'Australia/Sydney' FROM bench_rows",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE permissions, booking_snapshots, booking_outcomes, buildings")
        .execute(pool)
        .await
        .unwrap();
}

/// Seeds Salto with exactly what the ledger holds (read back from it), in chunks under the
/// control API's body limit.
async fn seed_salto(sim: &salto_sim::RunningSim, pool: &sqlx::PgPool, shape: LedgerShape) {
    let rows = sqlx::query(
        "SELECT access_level_id, zone_id, timetable_id, period_start, period_end
           FROM permissions ORDER BY access_level_id, zone_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in &rows {
        let start: NaiveDateTime = row.get("period_start");
        let end: NaiveDateTime = row.get("period_end");
        let timetable: i32 = row.get("timetable_id");
        groups.entry(row.get("access_level_id")).or_default().push(
            json!({"zone": row.get::<String, _>("zone_id"), "timetable": timetable,
                         "use_period": true, "period": {"start": start, "end": end}}),
        );
    }
    let http = reqwest::Client::new();
    let seed = |body: Value| {
        let http = http.clone();
        let url = format!("http://{}/_sim/seed", sim.addr);
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "salto-sim seed: {}",
                response.status()
            );
        }
    };
    let zones: Vec<Value> = (0..shape.zones_per_level)
        .map(|z| json!({"ext_id": format!("Z-{z}"), "name": format!("Facility {z}")}))
        .collect();
    let timetables: Vec<Value> = TIMETABLES
        .iter()
        .map(|(id, s, e)| {
            let hms = |secs: &u32| format!("{:02}:{:02}:00", secs / 3600, secs / 60 % 60);
            json!({"id": id, "name": format!("Bench {id}"),
                   "intervals": [{"start": hms(s), "end": hms(e)}]})
        })
        .collect();
    seed(json!({"timezone": "Australia/Sydney", "zones": zones, "timetables": timetables})).await;
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(ext_id, zones)| json!({"ext_id": ext_id, "name": ext_id, "zones": zones}))
        .collect();
    for chunk in groups.chunks(500) {
        seed(json!({"groups": chunk})).await;
    }
}

/// The cleaner's databases are large; drop each when its row is printed.
async fn drop_database(db: &TestDb) {
    let mut admin = sqlx::PgConnection::connect(&testkit::db::server_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        db.name
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
