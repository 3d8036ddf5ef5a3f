//! Part 2 of the bench, the nightly cleaner on a ledger loaded straight into salto-sync's tables
//! (see the crate doc): one pass per row, each on a fresh database and Salto.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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
use uuid::Uuid;

use futures::StreamExt;

use crate::common::{booked_by_manager, env_number};

/// The local date whose clearing is timed; the expired permissions are of the day before.
pub fn clearing_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
}

const BUILDINGS: usize = 20;
const SYDNEY: chrono_tz::Tz = chrono_tz::Australia::Sydney;
/// The pool's timetables: (id, start, end) in seconds of the day. Bookings cycle through them.
pub const TIMETABLES: [(u32, u32, u32); 4] = [
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

/// How one row's cleaner is set: batch size, batches per server at once, and reconciliation
/// (`None`: off; `Some(days)`: every access level at least once in `days` nights).
#[derive(Debug, Clone, Copy)]
struct Way {
    batch_levels: usize,
    concurrency_per_server: usize,
    reconcile_days: Option<u32>,
}

impl Way {
    /// One access level per transaction, one transaction at a time: the clearing as it was.
    const ONE_BY_ONE: Way = Way {
        batch_levels: 1,
        concurrency_per_server: 1,
        reconcile_days: None,
    };

    /// The defaults (`CONNECX__CLEANER__*`).
    fn defaults() -> Way {
        let d = CleanerSettings::default();
        Way {
            batch_levels: env_number("BENCH_BATCH_LEVELS", d.batch_levels),
            concurrency_per_server: env_number("BENCH_CONCURRENCY", d.concurrency_per_server),
            reconcile_days: None,
        }
    }

    fn reconciling(self, days: u32) -> Way {
        Way {
            reconcile_days: Some(days),
            ..self
        }
    }

    fn settings(self) -> CleanerSettings {
        CleanerSettings {
            reconcile: self.reconcile_days.is_some(),
            reconcile_days: self.reconcile_days.unwrap_or(1),
            batch_levels: self.batch_levels,
            concurrency_per_server: self.concurrency_per_server,
            ..CleanerSettings::default()
        }
    }

    fn reconcile_text(self) -> String {
        match self.reconcile_days {
            None => "off".into(),
            Some(1) => "every level".into(),
            Some(days) => format!("touched+1/{days}"),
        }
    }
}

struct PassFigures {
    shape: LedgerShape,
    way: Way,
    seconds: f64,
    ship_requests: usize,
}

pub async fn cleaner_scaling(held: usize, expired: usize, with_reconcile: bool) {
    let zones = 10;
    let levels = (held / zones).max(1);
    let expired = expired.clamp(1, levels);
    let main = LedgerShape::new(levels, zones, expired);
    let mut rows = vec![
        (main, Way::ONE_BY_ONE),
        (main, Way::defaults()),
        (
            LedgerShape::new(levels, zones, expired / 10),
            Way::defaults(),
        ),
        (LedgerShape::new(expired, 2, expired), Way::defaults()),
    ];
    if with_reconcile {
        rows.push((main, Way::ONE_BY_ONE.reconciling(1)));
        rows.push((main, Way::defaults().reconciling(1)));
        rows.push((main, Way::defaults().reconciling(7)));
        // Half the access levels touched: the rotating slice shows in the figure.
        rows.push((
            LedgerShape::new(levels, zones, levels / 2),
            Way::defaults().reconciling(7),
        ));
    }
    println!(
        "nightly cleaner, one pass for {} ({BUILDINGS} buildings, one Salto server, {} timetables):",
        clearing_date(),
        TIMETABLES.len()
    );
    println!(
        "  {:>9} {:>9} {:>8} {:>6} {:>5} {:>15} {:>9} {:>10} {:>10}",
        "expired",
        "held",
        "levels",
        "batch",
        "conc",
        "reconcile",
        "seconds",
        "expired/s",
        "SHIP calls"
    );
    let floor = floor_pass(main).await;
    // BENCH_BEFORE=0 leaves out the rows of the clearing as it was (one access level at a time).
    if env_number("BENCH_BEFORE", 1) == 0 {
        rows.retain(|(_, way)| way.batch_levels > 1);
    }
    for (shape, way) in rows {
        let figures = cleaner_pass(shape, way).await;
        println!(
            "  {:>9} {:>9} {:>8} {:>6} {:>5} {:>15} {:>9.2} {:>10.0} {:>10}",
            figures.shape.expired(),
            figures.shape.held(),
            figures.shape.levels,
            figures.way.batch_levels,
            figures.way.concurrency_per_server,
            figures.way.reconcile_text(),
            figures.seconds,
            figures.shape.expired() as f64 / figures.seconds,
            figures.ship_requests
        );
    }
    println!(
        "  {:>9} {:>9} {:>8} {:>6} {:>5} {:>15} {:>9.2} {:>10.0} {:>10}   <- floor: only the SHIP calls and the result events, no database",
        main.expired(),
        main.held(),
        main.levels,
        floor.batch,
        floor.concurrency,
        "off",
        floor.seconds,
        main.expired() as f64 / floor.seconds,
        floor.ship_requests
    );
    println!(
        "  (each row: fresh database and Salto; verified after the pass: no row dated before {} \
         left in the ledger or Salto, the rest still held, one facility_access.expired per \
         expired booking in booking-api's results queue. batch = access levels per ledger \
         transaction, conc = transactions per Salto server at once; batch 1, conc 1 is the \
         clearing one access level at a time, as it was before)",
        clearing_date()
    );
}

async fn cleaner_pass(shape: LedgerShape, way: Way) -> PassFigures {
    let stage = Stage::start().await;
    let Stage { db, broker, sim } = &stage;
    let today = clearing_date();
    let now = SYDNEY
        .from_local_datetime(&today.and_time(NaiveTime::from_hms_opt(0, 6, 0).unwrap()))
        .single()
        .unwrap()
        .with_timezone(&Utc);
    let app = stage
        .salto_sync(way.settings(), Arc::new(ManualClock::new(now)))
        .await;

    load_ledger(
        app.pool(),
        shape,
        today,
        &salto_sync::servers::server_key(&sim.url()),
    )
    .await;
    seed_salto(sim, app.pool(), shape).await;

    let requests_before = sim.state.lock().requests.len();
    let cleaner = app.cleaner();
    perf_control("enable");
    let started = Instant::now();
    let clearings = cleaner.tick().await.expect("the clearing runs");
    let seconds = started.elapsed().as_secs_f64();
    perf_control("disable");
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
    drop_database(db).await;
    PassFigures {
        shape,
        way,
        seconds,
        ship_requests,
    }
}

/// Where a bench's clearing runs: a fresh database and broker, with the queues the results are
/// routed to in production (publishing is mandatory), and a Salto simulator answering at once.
pub struct Stage {
    pub db: TestDb,
    pub broker: TestBroker,
    pub sim: salto_sim::RunningSim,
}

impl Stage {
    pub async fn start() -> Stage {
        let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
        let sim = salto_sim::RunningSim::start(0).await.unwrap();
        broker
            .declare_queue(&contracts::BOOKING_API_RESULTS_QUEUE, 5)
            .await;
        broker.declare_queue(&contracts::NOTIFIER_QUEUE, 5).await;
        Stage { db, broker, sim }
    }

    /// salto-sync on the stage, with the simulator as its default server, `cleaner`, the
    /// service's own default pool (not the tests' small one; `BENCH_DB_CONNECTIONS`) and
    /// `clock`.
    pub async fn salto_sync(
        &self,
        cleaner: CleanerSettings,
        clock: Arc<ManualClock>,
    ) -> salto_sync::Application {
        let mut shared = testkit::shared_settings(
            self.db.url.clone(),
            self.broker.url.clone(),
            &RetrySettings::default().tiers.0,
        );
        shared.database.max_connections = env_number("BENCH_DB_CONNECTIONS", 10) as u32;
        salto_sync::Application::build_with_clock(
            salto_sync::Settings {
                shared,
                salto: Some(SaltoSettings {
                    url: self.sim.url(),
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
                cleaner,
                batch: Default::default(),
            },
            clock,
        )
        .await
        .expect("salto-sync builds")
    }
}

/// What the floor row did.
struct Floor {
    batch: usize,
    concurrency: usize,
    seconds: f64,
    ship_requests: usize,
}

/// The least any clearing of `shape` must do, on the same Salto simulator and broker: for every
/// access level with an expired permission, read its group and write it back without that
/// permission (SHIP has no smaller write), and publish one `facility_access.expired` per expired
/// booking with confirms, in batches of the default size, as many batches at once as the
/// default concurrency. No database, no locks, no ledger.
async fn floor_pass(shape: LedgerShape) -> Floor {
    let Stage { db, broker, sim } = Stage::start().await;
    let today = clearing_date();
    // The service's migrations make the tables the ledger is loaded into (and Salto seeded from).
    let pool = db.pool(salto_sync::SCHEMA).await;
    salto_sync::MIGRATOR.run(&pool).await.unwrap();
    load_ledger(&pool, shape, today, "floor").await;
    seed_salto(&sim, &pool, shape).await;
    let expired: Vec<(String, String)> = sqlx::query_as(
        "SELECT access_level_id, zone_id FROM permissions WHERE local_date < $1 ORDER BY 1",
    )
    .bind(today)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;

    let ship = salto_ship::ShipClient::new(&salto_ship::ShipSettings {
        url: sim.url(),
        auth: salto_ship::ShipAuth::None,
        timeout: std::time::Duration::from_secs(10),
    })
    .unwrap();
    let shared = testkit::shared_settings(
        db.url.clone(),
        broker.url.clone(),
        &RetrySettings::default().tiers.0,
    );
    let publisher = platform::amqp::Publisher::new(&shared.amqp, "bench-floor");
    let defaults = CleanerSettings::default();
    let requests_before = sim.state.lock().requests.len();
    let started = Instant::now();
    futures::stream::iter(expired.chunks(defaults.batch_levels))
        .map(|batch| {
            let (ship, publisher) = (ship.clone(), publisher.clone());
            async move {
                let mut events = Vec::with_capacity(batch.len());
                for (access_level, zone) in batch {
                    let mut group = ship.read_group(access_level).await.unwrap();
                    group.permissions.retain(|p| &p.zone != zone);
                    ship.update_group(&group).await.unwrap();
                    events.push(salto_sync::results::result_event(
                        salto_sync::results::Outcome::Expired,
                        Uuid::new_v4(),
                        1,
                        bench_booking(),
                        None,
                        None,
                    ));
                }
                publisher.publish_events(&events).await.unwrap();
            }
        })
        .buffer_unordered(defaults.concurrency_per_server)
        .collect::<Vec<()>>()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let ship_requests = sim.state.lock().requests.len() - requests_before;
    assert_eq!(
        broker
            .queue_depth(contracts::BOOKING_API_RESULTS_QUEUE.name)
            .await as usize,
        shape.expired()
    );
    drop_database(&db).await;
    Floor {
        batch: defaults.batch_levels,
        concurrency: defaults.concurrency_per_server,
        seconds,
        ship_requests,
    }
}

/// A booking snapshot as booking-api publishes it; the rows' own fields are set in SQL.
fn snapshot_template() -> Value {
    serde_json::to_value(Envelope::new(
        Uuid::nil(),
        1,
        Event::FacilityBookingCreated(bench_booking()),
    ))
    .unwrap()
}

/// The facility booking of [`snapshot_template`].
pub fn bench_booking() -> FacilityBooking {
    let at = Utc::now();
    let local = at.naive_utc();
    FacilityBooking {
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
    }
}

/// Fills the ledger as months of granted bookings would have: the permissions, each booking's
/// snapshot and outcome, and the buildings. One transaction; then ANALYZE, as autovacuum would.
async fn load_ledger(pool: &sqlx::PgPool, shape: LedgerShape, today: NaiveDate, server: &str) {
    let step = shape.expiry_step as i32;
    let per_building = shape.levels.div_ceil(BUILDINGS) as i32;
    let (starts, ends) = timetable_columns();
    // Row g is access level g / Z, zone g % Z. A level l with l % step = 0 has one permission of
    // yesterday, on zone (l / step) % Z; everything else is dated today to four weeks ahead.
    let rows = sqlx::query(
        "INSERT INTO bench_rows
         SELECT g, md5('bench-booking-' || g)::uuid,
                'bench-' || lpad((l / $4)::text, 2, '0'),
                'AL-' || lpad(l::text, 6, '0'),
                'Z-' || z,
                CASE WHEN l % $3 = 0 AND z = (l / $3) % $2 THEN $5::date - 1 ELSE $5::date + g % 28 END,
                1 + g % 4, ($6::int[])[1 + g % 4], ($7::int[])[1 + g % 4],
                $8, 'Australia/Sydney'
           FROM (SELECT g, g / $2 AS l, g % $2 AS z FROM generate_series(0, $1 - 1) AS g) AS s",
    )
    .bind(shape.held() as i32)
    .bind(shape.zones_per_level as i32)
    .bind(step)
    .bind(per_building)
    .bind(today)
    .bind(starts)
    .bind(ends)
    .bind(server);
    load_rows(pool, rows).await;
}

/// The pool's timetables as the two columns (start, end seconds) the loaders index into.
pub fn timetable_columns() -> (Vec<i32>, Vec<i32>) {
    TIMETABLES
        .iter()
        .map(|(_, s, e)| (*s as i32, *e as i32))
        .unzip()
}

/// Loads the ledger from the rows `fill` inserts into `bench_rows` (g, booking_id, building_id,
/// access_level_id, zone_id, local_date, timetable_id, starts_secs, ends_secs, server,
/// timezone): the permissions, each booking's snapshot and outcome, and the buildings. One
/// transaction; then ANALYZE, as autovacuum would.
pub async fn load_rows<'q>(
    pool: &sqlx::PgPool,
    fill: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE bench_rows (
            g int, booking_id uuid, building_id text, access_level_id text, zone_id text,
            local_date date, timetable_id int, starts_secs int, ends_secs int, server text,
            timezone text) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    fill.execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO permissions (building_id, access_level_id, zone_id, booking_id, version,
                                  local_date, starts_secs, ends_secs, timetable_id, period_start,
                                  period_end, server)
         SELECT building_id, access_level_id, zone_id, booking_id, 1, local_date, starts_secs,
                ends_secs, timetable_id, local_date + time '00:00:00', local_date + time '23:59:59',
                server
           FROM bench_rows",
    )
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
                    'building', ($1::jsonb #> '{data,building}')
                                || jsonb_build_object('id', r.building_id, 'timezone', r.timezone),
                    'window', jsonb_build_object(
                      'starts_at', (r.local_date + make_interval(secs => r.starts_secs)) AT TIME ZONE r.timezone,
                      'ends_at', (r.local_date + make_interval(secs => r.ends_secs)) AT TIME ZONE r.timezone,
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
         SELECT DISTINCT building_id, timezone FROM bench_rows",
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
    seed_salto_zones(sim, pool, shape.zones_per_level).await;
}

/// [`seed_salto`] with `zones` zones (`Z-0`, `Z-1` …).
pub async fn seed_salto_zones(sim: &salto_sim::RunningSim, pool: &sqlx::PgPool, zones: usize) {
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
    let zones: Vec<Value> = (0..zones)
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
pub async fn drop_database(db: &TestDb) {
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

/// With `BENCH_PERF_CTL` set to the control FIFO of `perf record --control fifo:… -D -1`, turns
/// the profile on and off around each timed pass, so that it holds the pass alone.
pub fn perf_control(command: &str) {
    if let Ok(path) = std::env::var("BENCH_PERF_CTL") {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        writeln!(fifo, "{command}").unwrap();
    }
}
