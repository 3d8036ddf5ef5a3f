//! Part 3 of the bench, a fleet's night: B buildings (default 1,000) in 12 time zones, each on
//! its own Salto server, E expired permissions each (default 100) among twice as many held. One
//! simulator answers for every server (each building's server is its own URL on it, so
//! salto-sync keeps a client, a bulkhead and a lane per server, as it would for real ones). The
//! clock is set to each time zone's clearing time (00:05 local) in turn, where one cleaner tick
//! clears that zone's buildings; the tick is timed, so every building of the zone was cleared
//! within that many seconds of its clearing time (target: 60 s). The night before is recorded as
//! done, as it would be in a running fleet.

use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use salto_sync::{CleanerSettings, ManualClock};

use crate::cleaner::{
    Stage, clearing_date, drop_database, load_rows, seed_salto_zones, timetable_columns,
};
use crate::common::env_number;

/// One time zone per hour band the fleet spans, each with its own clearing instant.
const FLEET_ZONES: [&str; 12] = [
    "Pacific/Auckland",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Singapore",
    "Asia/Kolkata",
    "Asia/Dubai",
    "Europe/Moscow",
    "Europe/Berlin",
    "Europe/London",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
];

pub async fn fleet_night() {
    let buildings = env_number("BENCH_FLEET_BUILDINGS", 1_000);
    let expired_each = env_number("BENCH_FLEET_EXPIRED", 100);
    let stage = Stage::start().await;
    let Stage { db, broker, sim } = &stage;

    let night = clearing_date();
    let clearing_time = NaiveTime::from_hms_opt(0, 5, 0).unwrap();
    let at_clearing = |zone: &str| {
        let tz: Tz = zone.parse().unwrap();
        tz.from_local_datetime(&night.and_time(clearing_time))
            .single()
            .unwrap()
            .with_timezone(&Utc)
    };
    let mut instants: Vec<(&str, chrono::DateTime<Utc>)> =
        FLEET_ZONES.iter().map(|z| (*z, at_clearing(z))).collect();
    instants.sort_by_key(|(_, at)| *at);
    let clock = Arc::new(ManualClock::new(instants[0].1));

    let app = stage
        .salto_sync(CleanerSettings::default(), clock.clone())
        .await;
    let pool = app.pool().clone();

    // Building b's server is `<simulator>/server-<b>`, stored as its connection would be.
    let server_prefix = format!("{}server-", sim.url());
    sqlx::query(
        "INSERT INTO salto_servers (server, connection, changed_at)
         SELECT $1 || lpad(b::text, 4, '0'),
                jsonb_build_object('url', $1 || lpad(b::text, 4, '0'), 'auth_kind', 'none',
                                   'username', null, 'password', null, 'key', null,
                                   'timeout_secs', 10),
                now()
           FROM generate_series(0, $2 - 1) AS b",
    )
    .bind(&server_prefix)
    .bind(buildings as i32)
    .execute(&pool)
    .await
    .unwrap();
    // Level l of building b holds zone Z-0 (ended yesterday) and Z-1 (today to four weeks on).
    let (starts, ends) = timetable_columns();
    let zones: Vec<&str> = FLEET_ZONES.to_vec();
    let rows = sqlx::query(
        "INSERT INTO bench_rows
         SELECT g, md5('fleet-booking-' || g)::uuid,
                'fleet-' || lpad(b::text, 4, '0'),
                'FL-' || lpad(b::text, 4, '0') || '-' || lpad(l::text, 4, '0'),
                'Z-' || z,
                CASE WHEN z = 0 THEN $3::date - 1 ELSE $3::date + g % 28 END,
                1 + g % 4, ($4::int[])[1 + g % 4], ($5::int[])[1 + g % 4],
                $6 || lpad(b::text, 4, '0'),
                ($7::text[])[1 + b % 12]
           FROM (SELECT g, g / 2 % $2 AS l, g % 2 AS z, g / 2 / $2 AS b
                   FROM generate_series(0, $1 - 1) AS g) AS s",
    )
    .bind((buildings * expired_each * 2) as i32)
    .bind(expired_each as i32)
    .bind(night)
    .bind(starts)
    .bind(ends)
    .bind(&server_prefix)
    .bind(&zones);
    load_rows(&pool, rows).await;
    seed_salto_zones(sim, &pool, 2).await;
    sqlx::query(
        "INSERT INTO cleaner_runs (building_id, local_date, finished_at)
         SELECT building_id, $1::date - 1, now() FROM buildings",
    )
    .bind(night)
    .execute(&pool)
    .await
    .unwrap();

    println!(
        "a fleet's night ({night}): {buildings} buildings in {} time zones, each on its own Salto \
         server, {expired_each} expired among {} held each, cleaner defaults (reconciliation on):",
        FLEET_ZONES.len(),
        expired_each * 2
    );
    println!(
        "  {:<20} {:>20} {:>9} {:>8} {:>9}",
        "time zone", "00:05 local (UTC)", "buildings", "expired", "seconds"
    );
    let cleaner = app.cleaner();
    let mut slowest: f64 = 0.0;
    let mut cleared_buildings = 0;
    for (zone, at) in &instants {
        clock.set(*at);
        let started = Instant::now();
        let clearings = cleaner.tick().await.expect("the clearing runs");
        let seconds = started.elapsed().as_secs_f64();
        let expired: usize = clearings.iter().map(|c| c.expired).sum();
        assert!(
            clearings.iter().all(|c| c.local_date == night),
            "{zone}: only this night's clearings are due"
        );
        assert_eq!(expired, clearings.len() * expired_each, "{zone}");
        cleared_buildings += clearings.len();
        slowest = slowest.max(seconds);
        println!(
            "  {:<20} {:>20} {:>9} {:>8} {:>9.2}",
            zone,
            at.format("%Y-%m-%d %H:%M"),
            clearings.len(),
            expired,
            seconds
        );
    }
    assert_eq!(cleared_buildings, buildings, "every building cleared once");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions WHERE local_date < $1")
        .bind(night)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "no expired permission left in the ledger");
    let published = broker
        .queue_depth(contracts::BOOKING_API_RESULTS_QUEUE.name)
        .await as usize;
    assert_eq!(published, buildings * expired_each, "one result per expiry");
    println!(
        "  every building cleared within {slowest:.1} s of its clearing time (target < 60 s); \
         verified: no expired permission left, one facility_access.expired per expiry"
    );
    drop(cleaner);
    pool.close().await;
    drop(app);
    drop_database(db).await;
}
