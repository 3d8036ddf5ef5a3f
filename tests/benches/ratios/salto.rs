//! salto-sync (`BENCH_ONLY=salto`): a backlog of `facility_booking.created` (no double
//! bookings), until each has its result, against raw consume+ack of the same bodies. Target
//! ≥ 30 %.

use contracts::{Apartment, BookingState, Envelope, Event, Facility, FacilityBooking};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::booked_by_manager;
use crate::setup::{
    building, evening_window, expect_results, fill_worker_queue, fresh_with_raw_median,
    measure_service, worker_settings,
};
use crate::table::Row;

/// Access levels (apartments) × zones the facility bookings spread over, so none is a double
/// booking and consecutive bookings are for different access levels, as real traffic is.
const SALTO_ZONES: usize = 10;

fn salto_level(a: usize) -> String {
    format!("BENCH-{a:04}")
}

fn salto_zone(z: usize) -> String {
    format!("BENCH-ZONE-{z:02}")
}

fn facility_booking_created(i: usize, levels: usize) -> Envelope {
    let (a, z) = (i % levels, i / levels);
    Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityBookingCreated(FacilityBooking {
            building: building(),
            window: evening_window(),
            facility: Facility {
                id: format!("bench-room-{z:02}"),
                name: format!("Bench room {z}"),
                zone_id: salto_zone(z),
            },
            apartment: Apartment {
                id: format!("apt-bench-{a:04}"),
                access_level_id: salto_level(a),
            },
            booked_by: booked_by_manager(),
            state: BookingState::Booked,
        }),
    )
}

pub async fn salto_ratio(n: usize) -> Row {
    println!("salto-sync ({n} facility_booking.created):");
    let levels = n.div_ceil(SALTO_ZONES);
    let events: Vec<Envelope> = (0..n)
        .map(|i| facility_booking_created(i, levels))
        .collect();
    let (db, broker, raw) = fresh_with_raw_median(&events).await;

    let sim = salto_sim::RunningSim::start(0).await.unwrap();
    let groups: Vec<Value> = (0..levels)
        .map(|a| json!({"ext_id": salto_level(a), "name": format!("Bench apartment {a}")}))
        .collect();
    let zones: Vec<Value> = (0..SALTO_ZONES)
        .map(|z| json!({"ext_id": salto_zone(z), "name": format!("Bench room {z}")}))
        .collect();
    let seeded = reqwest::Client::new()
        .post(format!("http://{}/_sim/seed", sim.addr))
        .json(&json!({"timezone": "Australia/Sydney", "groups": groups, "zones": zones}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "salto-sim seeded");
    let mut results = broker.tap("facility_access.#").await;
    fill_worker_queue(&broker, &contracts::SALTO_SYNC_QUEUE, &events).await;
    let (database, amqp, retry) = worker_settings(&db, &broker);
    let app =
        salto_sync::Application::build(tests::salto_sync_settings(database, amqp, retry, &sim))
            .await
            .unwrap();
    let done = expect_results(&mut results, n, "facility_access.granted.v1");
    let run = |stop| app.run_until_stopped(stop);
    let measured = measure_service(&db, "salto-sync", n, run, done).await;
    Row::ratio("salto-sync", "msg/s", measured, raw, 30.0)
}
