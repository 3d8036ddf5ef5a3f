//! Who may do what (docs/architecture.md, "Services and what each owns"): 401 without a valid token, 403 out of scope, 404 for another
//! building's resources.

use contracts::Role;
use reqwest::Method;
use serde_json::json;

use crate::support::{
    BUILDING, OTHER_BUILDING, SECRET, body, booking_path, facility_booking, problem,
    spawn_app_offline, token_with, visit,
};

#[tokio::test]
async fn a_request_without_a_token_is_401() {
    let app = spawn_app_offline().await;
    let response = app
        .send(Method::GET, "/v1/visitor-bookings", None, None)
        .await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let p = problem(response, 401).await;
    assert_eq!(p["code"], "missing_token");
    let response = app
        .client
        .get(app.url("/v1/visitor-bookings"))
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response, 401).await["code"], "invalid_token");
    app.stop().await;
}

#[tokio::test]
async fn a_token_with_a_bad_signature_is_401() {
    let app = spawn_app_offline().await;
    let forged = token_with(
        "not-the-secret-not-the-secret-not-the",
        Role::Manager,
        "m",
        BUILDING,
        None,
        3600,
    );
    let response = app
        .send(Method::GET, "/v1/visitor-bookings", Some(&forged), None)
        .await;
    assert_eq!(problem(response, 401).await["code"], "invalid_token");
    let response = app
        .send(Method::GET, "/v1/visitor-bookings", Some("not.a.jwt"), None)
        .await;
    assert_eq!(problem(response, 401).await["code"], "invalid_token");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = spawn_app_offline().await;
    let expired = token_with(SECRET, Role::Manager, "m", BUILDING, None, -60);
    let response = app
        .send(Method::GET, "/v1/visitor-bookings", Some(&expired), None)
        .await;
    assert_eq!(problem(response, 401).await["code"], "token_expired");
    app.stop().await;
}

#[tokio::test]
async fn a_resident_cannot_see_or_change_another_residents_booking() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let created = app
        .book("/v1/visitor-bookings", &app.resident_ana(), visit(true))
        .await;
    let path = booking_path("/v1/visitor-bookings", &created);

    let bo = app.resident_bo();
    assert_eq!(
        problem(app.get(&path, &bo).await, 403).await["code"],
        "not_your_booking"
    );
    let (starts_at, _) = crate::support::local_tomorrow(17, 18);
    problem(
        app.patch(&path, &bo, json!({"starts_at": starts_at})).await,
        403,
    )
    .await;
    problem(app.delete(&path, &bo).await, 403).await;
    let listed = body(app.get("/v1/visitor-bookings", &bo).await).await;
    assert_eq!(
        listed["items"],
        json!([]),
        "Bo's list shows only Bo's bookings"
    );

    // Nothing changed.
    let seen = body(app.get(&path, &app.resident_ana()).await).await;
    assert_eq!(seen["version"], 1);
    assert_eq!(seen["state"], "booked");
    app.stop().await;
}

#[tokio::test]
async fn a_manager_of_another_building_gets_404_for_its_bookings() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let created = app
        .book("/v1/visitor-bookings", &app.resident_ana(), visit(false))
        .await;
    let path = booking_path("/v1/visitor-bookings", &created);
    let facility_window = crate::support::local_tomorrow(10, 11);
    let games_room = facility_booking("games-room", &facility_window);
    let facility = app
        .book("/v1/facility-bookings", &app.resident_ana(), games_room)
        .await;
    let facility_path = booking_path("/v1/facility-bookings", &facility);

    let stranger = app.token(Role::Manager, "manager-2", OTHER_BUILDING, None);
    for path in [&path, &facility_path] {
        assert_eq!(
            problem(app.get(path, &stranger).await, 404).await["code"],
            "booking_not_found"
        );
        problem(app.delete(path, &stranger).await, 404).await;
        problem(
            app.patch(path, &stranger, json!({"ends_at": facility_window.1}))
                .await,
            404,
        )
        .await;
    }
    let listed = body(app.get("/v1/visitor-bookings", &stranger).await).await;
    assert_eq!(listed["items"], json!([]));
    // The building's own manager sees it.
    assert_eq!(app.get(&path, &app.manager()).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn only_managers_of_the_building_may_set_it_up() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let building = json!({"name": "X", "timezone": "UTC"});
    let p = problem(
        app.put(
            &format!("/v1/buildings/{BUILDING}"),
            &app.resident_ana(),
            building.clone(),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(p["code"], "managers_only");
    let p = problem(
        app.put(
            &format!("/v1/buildings/{OTHER_BUILDING}"),
            &app.manager(),
            building,
        )
        .await,
        403,
    )
    .await;
    assert_eq!(p["code"], "not_your_building");
    problem(
        app.put(
            "/v1/apartments/apt-9",
            &app.resident_ana(),
            json!({"access_control_id": "9"}),
        )
        .await,
        403,
    )
    .await;
    problem(
        app.put(
            "/v1/facilities/f-9",
            &app.resident_ana(),
            json!({"name": "Pool"}),
        )
        .await,
        403,
    )
    .await;
    problem(
        app.put(
            "/v1/residents/ana",
            &app.resident_ana(),
            json!({"name": "Ana", "email": "a@x.example", "apartment_id": "apt-501"}),
        )
        .await,
        403,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_resident_books_facilities_only_for_their_own_apartment() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let (starts_at, ends_at) = crate::support::local_tomorrow(10, 11);
    let response = app
        .post(
            "/v1/facility-bookings",
            &app.resident_ana(),
            json!({"facility_id": "games-room", "apartment_id": "apt-502", "starts_at": starts_at, "ends_at": ends_at}),
        )
        .await;
    assert_eq!(problem(response, 403).await["code"], "not_your_apartment");
    let response = app
        .post("/v1/visitor-bookings", &app.resident_ana(), {
            let mut v = visit(false);
            v["resident_id"] = json!("bo");
            v
        })
        .await;
    problem(response, 403).await;
    assert_eq!(app.outbox_rows().await, 0);
    app.stop().await;
}
