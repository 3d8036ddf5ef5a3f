//! salto-sync (`BENCH_ONLY=salto`): a backlog of `facility_booking.created` (no double
//! bookings), until each has its result, against raw consume+ack of the same bodies. Target
//! ≥ 15 %. For information, the same backlog with each message handled alone (no batching).

use contracts::{Apartment, BookingState, Envelope, Event, Facility, FacilityBooking};
use platform::batch::BatchSettings;
use serde_json::{Value, json};
use testkit::{TestBroker, TestDb};
use uuid::Uuid;

use crate::common::{BENCH_FACILITIES, bench_apartment, bench_facility, booked_by_manager};
use crate::setup::{
    bench_batch_settings, bench_batching, building, evening_window, expect_results,
    fill_worker_queue, fresh_with_raw_median, measure_service, worker_settings,
};
use crate::table::Row;

fn facility_booking_created(i: usize, levels: usize) -> Envelope {
    // The pairs of the end-to-end benches' facility bookings (`facility_booking_body`): none is
    // a double booking, and consecutive bookings are for different access levels.
    let (a, z) = (i % levels, i / levels);
    let ((apartment_id, access_level_id), (facility_id, zone_id)) =
        (bench_apartment(a), bench_facility(z));
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityBookingCreated(FacilityBooking {
            building: building(),
            window: evening_window(),
            facility: Facility {
                id: facility_id,
                name: format!("Bench room {z}"),
                zone_id,
            },
            apartment: Apartment {
                id: apartment_id,
                access_level_id,
            },
            booked_by: booked_by_manager(),
            state: BookingState::Booked,
        }),
    )
}

pub async fn salto_ratio(n: usize) -> Vec<Row> {
    println!("salto-sync ({n} facility_booking.created):");
    let levels = n.div_ceil(BENCH_FACILITIES);
    let events: Vec<Envelope> = (0..n)
        .map(|i| facility_booking_created(i, levels))
        .collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;
    let batch = bench_batch_settings(BatchSettings::default());
    let batched = salto_sync_run(&db, &broker, &events, levels, batch).await;
    let row = Row::ratio("salto-sync", "msg/s", batched, raw, 15.0);

    // The same backlog with each message handled alone, as before batching: a database, broker
    // and simulator of their own.
    let (alone_db, alone_broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let alone = BatchSettings {
        max_messages: 1,
        ..BatchSettings::default()
    };
    let alone = salto_sync_run(&alone_db, &alone_broker, &events, levels, alone).await;
    let alone_row = Row::floor("  each message alone (no batching)", alone, raw, "msg/s");
    vec![row, alone_row]
}

/// salto-sync, batching as `batch` says, on a backlog of `events` for `levels` access levels
/// (a simulator of its own): messages per second until each has its `granted`.
async fn salto_sync_run(
    db: &TestDb,
    broker: &TestBroker,
    events: &[Envelope],
    levels: usize,
    batch: BatchSettings,
) -> f64 {
    let n = events.len();
    let sim = salto_sim::RunningSim::start(0).await.unwrap();
    let groups: Vec<Value> = (0..levels)
        .map(|a| json!({"ext_id": bench_apartment(a).1, "name": format!("Bench apartment {a}")}))
        .collect();
    let zones: Vec<Value> = (0..BENCH_FACILITIES)
        .map(|z| json!({"ext_id": bench_facility(z).1, "name": format!("Bench room {z}")}))
        .collect();
    let seeded = reqwest::Client::new()
        .post(format!("http://{}/_sim/seed", sim.addr))
        .json(&json!({"timezone": "Australia/Sydney", "groups": groups, "zones": zones}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "salto-sim seeded");
    let mut results = broker.tap("facility_access.#").await;
    fill_worker_queue(broker, &contracts::SALTO_SYNC_QUEUE, events).await;
    let (database, amqp, retry) = worker_settings(db, broker);
    let mut settings = tests::salto_sync_settings(database, amqp, retry, &sim);
    bench_batching(
        &mut settings.batch,
        batch,
        &mut settings.shared.amqp,
        Some(&mut settings.connections),
    );
    let app = salto_sync::Application::build(settings).await.unwrap();
    let done = expect_results(&mut results, n, "facility_access.granted.v1");
    let run = |stop| app.run_until_stopped(stop);
    let label = if batch.batching() {
        "salto-sync"
    } else {
        "salto-sync, each message alone"
    };
    measure_service(db, label, n, run, done).await
}
