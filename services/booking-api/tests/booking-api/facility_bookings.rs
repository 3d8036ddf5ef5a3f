//! Facility bookings: one building-local day, an apartment's own, and only when the manager has
//! given the facility and the apartment their Salto IDs.

use std::time::Duration;

use contracts::{BookingState, Event, Role};
use serde_json::json;

use crate::support::{
    BUILDING, body, booking_path, code_and_field, facility_booking, local_tomorrow, problem,
    spawn_app, spawn_app_offline,
};

const WAIT: Duration = Duration::from_secs(15);
const PATH: &str = "/v1/facility-bookings";

#[tokio::test]
async fn a_facility_booking_is_announced_with_the_salto_ids_and_the_booker() {
    let app = spawn_app().await;
    let mut tap = app.broker().tap("facility_booking.#").await;
    app.seed().await;
    let ana = app.resident_ana();
    let window = local_tomorrow(19, 21);
    let response = app
        .post(PATH, &ana, facility_booking("games-room", &window))
        .await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(created["apartment_id"], "apt-501");
    assert_eq!(created["facility_id"], "games-room");
    assert_eq!(
        created["access"],
        json!({"status": "pending", "reason": null, "reason_code": null, "held_by": null})
    );

    let event = tap.next(WAIT).await.expect("created event");
    let Event::FacilityBookingCreated(snapshot) = &event.event else {
        panic!("{event:?}")
    };
    assert_eq!(event.version, 1);
    assert_eq!(snapshot.facility.id, "games-room");
    assert_eq!(snapshot.facility.name, "Games room");
    assert_eq!(snapshot.facility.zone_id, "GAMES-ROOM");
    assert_eq!(snapshot.apartment.id, "apt-501");
    assert_eq!(snapshot.apartment.access_level_id, "501-56");
    assert_eq!(snapshot.booked_by.user_id, "ana");
    assert_eq!(snapshot.booked_by.role, Role::Resident);
    assert_eq!(snapshot.booked_by.name.as_deref(), Some("Ana Lee"));
    assert_eq!(
        snapshot.booked_by.email.as_deref(),
        Some("ana@residents.example")
    );
    assert_eq!(snapshot.building.timezone, "Australia/Sydney");
    assert_eq!(
        snapshot.window.local_starts_at.format("%H:%M").to_string(),
        "19:00"
    );
    assert_eq!(
        snapshot.window.local_starts_at.date(),
        snapshot.window.local_ends_at.date()
    );

    // A changed Zone ID is used for the next change of the booking.
    app.put(
        "/v1/facilities/games-room",
        &app.manager(),
        json!({"name": "Games room", "access_control_facility_id": "GAMES-2"}),
    )
    .await;
    let path = booking_path(PATH, &created);
    let (new_start, _) = local_tomorrow(20, 21);
    let patched = body(
        app.patch(&path, &ana, json!({"starts_at": new_start}))
            .await,
    )
    .await;
    assert_eq!(patched["version"], 2);
    let event = tap.next(WAIT).await.expect("rescheduled event");
    let Event::FacilityBookingRescheduled(snapshot) = &event.event else {
        panic!("{event:?}")
    };
    assert_eq!(snapshot.facility.zone_id, "GAMES-2");
    assert_eq!(event.version, 2);

    let cancelled = body(app.delete(&path, &ana).await).await;
    assert_eq!(cancelled["version"], 3);
    let event = tap.next(WAIT).await.expect("cancelled event");
    let Event::FacilityBookingCancelled(snapshot) = &event.event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (snapshot.state, event.version),
        (BookingState::Cancelled, 3)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_facility_booking_must_lie_within_one_building_local_day() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let (starts_at, _) = local_tomorrow(22, 23);
    // 22:00 to 01:00 the next day.
    let next_day = (chrono::DateTime::parse_from_rfc3339(&starts_at).unwrap()
        + chrono::Duration::hours(3))
    .to_rfc3339();
    let across_midnight = facility_booking("games-room", &(starts_at, next_day));
    let p = app.post_refused(PATH, &ana, across_midnight, 422).await;
    assert_eq!(
        code_and_field(&p),
        (Some("spans_several_local_days"), Some("ends_at"))
    );
    assert!(
        p["detail"].as_str().unwrap().contains("Australia/Sydney"),
        "{p}"
    );
    assert_eq!(app.outbox_rows().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn missing_salto_ids_say_what_the_manager_must_set() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let window = local_tomorrow(9, 10);
    let games_room = facility_booking("games-room", &window);
    let p = app
        .post_refused(
            PATH,
            &app.resident_ana(),
            facility_booking("gym", &window),
            422,
        )
        .await;
    assert_eq!(
        code_and_field(&p),
        (
            Some("facility_access_control_id_missing"),
            Some("facility_id")
        )
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("access_control_facility_id"),
        "{p}"
    );

    let cy = app.token(Role::Resident, "cy", BUILDING, Some("apt-503"));
    let p = app.post_refused(PATH, &cy, games_room.clone(), 422).await;
    assert_eq!(
        code_and_field(&p),
        (
            Some("apartment_access_control_id_missing"),
            Some("apartment_id")
        )
    );
    assert!(
        p["detail"].as_str().unwrap().contains("access_control_id"),
        "{p}"
    );

    let mut sauna = facility_booking("sauna", &window);
    sauna["apartment_id"] = json!("apt-501");
    let p = app.post_refused(PATH, &app.manager(), sauna, 422).await;
    assert_eq!(p["code"], "unknown_facility");
    let p = app
        .post_refused(PATH, &app.manager(), games_room.clone(), 422)
        .await;
    assert_eq!(p["field"], "apartment_id");
    // Nothing was booked; the managers are told once about each missing ID (the gym's, 503's).
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, envelope->'data'->'failure'->>'code' FROM outbox ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            (
                "facility_request.refused.v1".to_owned(),
                "facility_access_control_id_missing".to_owned()
            ),
            (
                "facility_request.refused.v1".to_owned(),
                "apartment_access_control_id_missing".to_owned()
            ),
        ]
    );
    assert_eq!(app.rows("facility_bookings").await, 0);
    // Cy asks again: the same 422, no second email today.
    app.post_refused(PATH, &cy, games_room.clone(), 422).await;
    assert_eq!(app.outbox_rows().await, 2);

    // A manager books for an apartment of the building.
    let mut for_502 = games_room;
    for_502["apartment_id"] = json!("apt-502");
    let response = app.post(PATH, &app.manager(), for_502).await;
    assert_eq!(response.status(), 201);
    // Bo lives in 502 and sees it; Ana does not.
    let created = body(response).await;
    let path = booking_path(PATH, &created);
    assert_eq!(app.get(&path, &app.resident_bo()).await.status(), 200);
    problem(app.get(&path, &app.resident_ana()).await, 403).await;
    app.stop().await;
}
