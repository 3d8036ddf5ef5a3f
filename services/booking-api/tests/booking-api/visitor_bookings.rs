//! Visitor bookings through their life: each change is one event with the full snapshot, and the
//! version counts the changes.

use std::time::Duration;

use contracts::{BookingState, Event};
use serde_json::json;

use crate::support::{
    body, booking_path, code_and_field, local_tomorrow, problem, spawn_app, spawn_app_offline,
    visit,
};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_booking_is_announced_created_rescheduled_and_cancelled_with_the_full_snapshot() {
    let app = spawn_app().await;
    let mut tap = app.broker().tap("visitor_booking.#").await;
    app.seed().await;
    let ana = app.resident_ana();

    let response = app.post("/v1/visitor-bookings", &ana, visit(true)).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = body(response).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/visitor-bookings/{id}"));
    assert_eq!(created["state"], "booked");
    assert_eq!(created["version"], 1);
    assert_eq!(created["resident_id"], "ana");
    assert_eq!(
        created["access"],
        json!({"status": "pending", "pin": null, "reason": null, "reason_code": null})
    );
    assert!(
        created["starts_at"].as_str().unwrap().ends_with('Z'),
        "UTC on output: {created}"
    );

    let event = tap.next(WAIT).await.expect("created event published");
    assert_eq!(event.booking_id.to_string(), id);
    assert_eq!(event.version, 1);
    let Event::VisitorBookingCreated(snapshot) = &event.event else {
        panic!("not created: {event:?}")
    };
    assert_eq!(snapshot.building.id, "harbour-view");
    assert_eq!(snapshot.building.name, "Harbour View");
    assert_eq!(snapshot.building.timezone, "Australia/Sydney");
    assert_eq!(
        snapshot.building.manager_emails,
        ["manager@harbour.example"]
    );
    assert_eq!(snapshot.building.ipassan_site.as_deref(), Some("site-7"));
    assert_eq!(
        snapshot.building.double_booking_policy,
        contracts::DoubleBookingPolicy::Auto
    );
    assert_eq!(snapshot.resident.id, "ana");
    assert_eq!(snapshot.resident.name, "Ana Lee");
    assert_eq!(snapshot.resident.email, "ana@residents.example");
    assert_eq!(snapshot.resident.apartment_id, "apt-501");
    assert_eq!(
        snapshot.resident.ipassan_person_id.as_deref(),
        Some("p-ana")
    );
    assert_eq!(snapshot.visitor.name, "Dee Visitor");
    assert_eq!(snapshot.visitor.email, "dee@visitors.example");
    assert!(snapshot.provide_access);
    assert_eq!(snapshot.state, BookingState::Booked);
    assert_eq!(
        snapshot.window.starts_at.to_rfc3339(),
        chrono::DateTime::parse_from_rfc3339(created["starts_at"].as_str().unwrap())
            .unwrap()
            .to_rfc3339()
    );
    assert_eq!(
        snapshot.window.local_starts_at.format("%H:%M").to_string(),
        "18:00"
    );
    assert_eq!(
        snapshot.window.local_ends_at.format("%H:%M").to_string(),
        "22:00"
    );

    let path = format!("/v1/visitor-bookings/{id}");
    let (_, later_end) = local_tomorrow(18, 23);
    let response = app.patch(&path, &ana, json!({"ends_at": later_end})).await;
    assert_eq!(response.status(), 200);
    let patched = body(response).await;
    assert_eq!(patched["version"], 2);
    let event = tap.next(WAIT).await.expect("rescheduled event published");
    assert_eq!(event.version, 2);
    let Event::VisitorBookingRescheduled(snapshot) = &event.event else {
        panic!("not rescheduled: {event:?}")
    };
    assert_eq!(
        snapshot.window.local_ends_at.format("%H:%M").to_string(),
        "23:00"
    );

    let response = app.delete(&path, &ana).await;
    assert_eq!(response.status(), 200);
    let cancelled = body(response).await;
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["version"].as_i64()),
        (Some("cancelled"), Some(3))
    );
    let event = tap.next(WAIT).await.expect("cancelled event published");
    assert_eq!(event.version, 3);
    let Event::VisitorBookingCancelled(snapshot) = &event.event else {
        panic!("not cancelled: {event:?}")
    };
    assert_eq!(snapshot.state, BookingState::Cancelled);

    // Cancelling again changes nothing and announces nothing.
    let again = body(app.delete(&path, &ana).await).await;
    assert_eq!(again["version"], 3);
    assert!(tap.next(Duration::from_secs(1)).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn only_the_window_of_a_booking_can_be_patched() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let created = body(app.post("/v1/visitor-bookings", &ana, visit(true)).await).await;
    let path = booking_path("/v1/visitor-bookings", &created);

    let p = problem(
        app.patch(
            &path,
            &ana,
            json!({"visitor": {"name": "Eve", "email": "e@x.example"}}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(
        code_and_field(&p),
        (Some("field_not_patchable"), Some("visitor"))
    );
    let p = problem(
        app.patch(
            &path,
            &ana,
            json!({"provide_access": false, "ends_at": created["ends_at"]}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "provide_access");
    let p = problem(
        app.patch(&path, &ana, json!({"starts_at": created["ends_at"]}))
            .await,
        422,
    )
    .await;
    assert_eq!(
        code_and_field(&p),
        (Some("ends_not_after_starts"), Some("starts_at"))
    );
    assert_eq!(
        problem(app.patch(&path, &ana, json!({})).await, 422).await["code"],
        "empty_patch"
    );

    let unchanged = body(app.get(&path, &ana).await).await;
    assert_eq!(unchanged["version"], 1);
    assert_eq!(unchanged["visitor"]["name"], "Dee Visitor");

    app.delete(&path, &ana).await;
    let p = problem(
        app.patch(&path, &ana, json!({"ends_at": created["ends_at"]}))
            .await,
        409,
    )
    .await;
    assert_eq!(p["code"], "booking_cancelled");
    app.stop().await;
}

#[tokio::test]
async fn access_for_a_resident_not_synced_to_ipassan_fails_at_once_and_nothing_is_kept() {
    let app = spawn_app().await;
    let mut tap = app.broker().tap("#").await;
    app.seed().await;
    let cy = app.token(
        contracts::Role::Resident,
        "cy",
        crate::support::BUILDING,
        Some("apt-503"),
    );

    let p = problem(
        app.post("/v1/visitor-bookings", &cy, visit(true)).await,
        422,
    )
    .await;
    assert_eq!(p["code"], "resident_not_synced_to_ipassan");

    let bookings: i64 = sqlx::query_scalar("SELECT count(*) FROM visitor_bookings")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(bookings, 0);
    assert_eq!(app.outbox_rows().await, 0);
    assert!(
        tap.next(Duration::from_secs(2)).await.is_none(),
        "nothing was published"
    );
    assert_eq!(
        body(app.get("/v1/visitor-bookings", &cy).await).await["items"],
        json!([])
    );

    // Without access the booking is fine.
    assert_eq!(
        app.post("/v1/visitor-bookings", &cy, visit(false))
            .await
            .status(),
        201
    );
    let created = tap
        .next(WAIT)
        .await
        .expect("the booking without access is announced");
    assert!(matches!(created.event, Event::VisitorBookingCreated(ref b) if !b.provide_access));
    app.stop().await;
}

#[tokio::test]
async fn a_manager_books_a_visitor_for_a_resident_of_the_building() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let manager = app.manager();
    let p = problem(
        app.post("/v1/visitor-bookings", &manager, visit(false))
            .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "resident_id");
    let mut request = visit(true);
    request["resident_id"] = json!("bo");
    let response = app.post("/v1/visitor-bookings", &manager, request).await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(created["resident_id"], "bo");
    // Bo sees it as his own; the manager sees every booking of the building.
    let path = booking_path("/v1/visitor-bookings", &created);
    assert_eq!(app.get(&path, &app.resident_bo()).await.status(), 200);
    app.post("/v1/visitor-bookings", &app.resident_ana(), visit(false))
        .await;
    let listed = body(app.get("/v1/visitor-bookings", &manager).await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let mut request = visit(false);
    request["resident_id"] = json!("nobody");
    let p = problem(
        app.post("/v1/visitor-bookings", &manager, request).await,
        422,
    )
    .await;
    assert_eq!(
        code_and_field(&p),
        (Some("unknown_resident"), Some("resident_id"))
    );
    app.stop().await;
}
