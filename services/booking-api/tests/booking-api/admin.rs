//! Admin upserts: 201 when created, 200 when updated, scoped to the manager's building.

use serde_json::json;

use crate::support::{BUILDING, body, code_and_field, problem, spawn_app_offline};

#[tokio::test]
async fn upserts_answer_201_then_200_and_keep_the_latest_values() {
    let app = spawn_app_offline().await;
    let manager = app.manager();
    let path = format!("/v1/buildings/{BUILDING}");
    let building = json!({"name": "Harbour View", "timezone": "Australia/Sydney", "manager_emails": ["m@h.example", "M@h.example"]});
    let response = app.put(&path, &manager, building.clone()).await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(created["double_booking_policy"], "auto");
    assert_eq!(
        created["manager_emails"],
        json!(["m@h.example"]),
        "duplicates dropped"
    );
    let mut changed = building;
    changed["double_booking_policy"] = json!("manual");
    changed["ipassan_site"] = json!("site-9");
    let response = app.put(&path, &manager, changed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["double_booking_policy"], "manual");

    let response = app
        .put(
            "/v1/apartments/apt-1",
            &manager,
            json!({"access_control_id": "1-56"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let response = app.put("/v1/apartments/apt-1", &manager, json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body(response).await,
        json!({"id": "apt-1", "access_control_id": null})
    );

    let response = app
        .put(
            "/v1/facilities/gym",
            &manager,
            json!({"name": " Gym ", "access_control_facility_id": "GYM"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(body(response).await["name"], "Gym");
    assert_eq!(
        app.put("/v1/facilities/gym", &manager, json!({"name": "Gym"}))
            .await
            .status(),
        200
    );

    let resident = json!({"name": "Ana Lee", "email": "ana@x.example", "apartment_id": "apt-1", "ipassan_person_id": "p-1"});
    assert_eq!(
        app.put("/v1/residents/ana", &manager, resident.clone())
            .await
            .status(),
        201
    );
    assert_eq!(
        app.put("/v1/residents/ana", &manager, resident)
            .await
            .status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn the_building_must_exist_and_residents_must_live_in_a_known_apartment() {
    let app = spawn_app_offline().await;
    let manager = app.manager();
    let p = problem(
        app.put(
            "/v1/apartments/apt-1",
            &manager,
            json!({"access_control_id": "1"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["code"], "building_not_registered");
    app.put(
        &format!("/v1/buildings/{BUILDING}"),
        &manager,
        json!({"name": "H", "timezone": "UTC"}),
    )
    .await;
    let p = problem(
        app.put(
            "/v1/residents/ana",
            &manager,
            json!({"name": "Ana", "email": "ana@x.example", "apartment_id": "apt-404"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(
        code_and_field(&p),
        (Some("unknown_apartment"), Some("apartment_id"))
    );
    let p = problem(
        app.put(
            "/v1/apartments/apt-1",
            &manager,
            json!({"access_control_id": "1", "floor": 5}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(code_and_field(&p), (Some("unknown_field"), Some("floor")));
    app.stop().await;
}
