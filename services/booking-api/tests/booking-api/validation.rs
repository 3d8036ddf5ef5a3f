//! Bad input always gets a 4xx problem+json naming what is wrong — never a 5xx or plain text.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    BUILDING, code_and_field, problem, spawn_app_offline, tomorrow_evening, visit,
};

#[tokio::test]
async fn bad_visitor_bookings_are_4xx_problems_naming_the_field() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let (starts_at, ends_at) = tomorrow_evening();
    let with = |field: &str, value: Value| {
        let mut v = visit(true);
        v[field] = value;
        v
    };
    let without = |field: &str| {
        let mut v = visit(true);
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (
            with("provide_access", json!("yes")),
            "invalid_value",
            Some("provide_access"),
        ),
        (
            with("starts_at", json!(12)),
            "invalid_value",
            Some("starts_at"),
        ),
        (
            with("starts_at", json!("tomorrow at six")),
            "invalid_value",
            Some("starts_at"),
        ),
        (
            with("starts_at", json!("2030-01-01T18:00:00")),
            "invalid_value",
            Some("starts_at"),
        ),
        (without("ends_at"), "missing_field", Some("ends_at")),
        (
            with("visitor", json!({"name": "Dee"})),
            "missing_field",
            Some("visitor.email"),
        ),
        (
            with("visitor", json!({"name": "Dee", "email": "not-an-address"})),
            "invalid_email",
            Some("visitor.email"),
        ),
        (
            with("visitor", json!({"name": "  ", "email": "dee@x.example"})),
            "required",
            Some("visitor.name"),
        ),
        (
            with("ends_at", json!(starts_at)),
            "ends_not_after_starts",
            Some("ends_at"),
        ),
        (
            json!({"visitor": {"name": "D", "email": "d@x.example"}, "starts_at": ends_at, "ends_at": starts_at, "provide_access": false}),
            "ends_not_after_starts",
            Some("ends_at"),
        ),
        (
            json!({"visitor": {"name": "D", "email": "d@x.example"}, "starts_at": "2020-01-01T10:00:00Z", "ends_at": "2020-01-01T11:00:00Z", "provide_access": false}),
            "ends_in_past",
            Some("ends_at"),
        ),
        (with("pin", json!("1234")), "unknown_field", Some("pin")),
        (
            with("resident_id", json!("bad id!")),
            "invalid_value",
            Some("resident_id"),
        ),
        (json!([1, 2]), "invalid_body", None),
        (json!("a string"), "invalid_body", None),
    ];
    for (request, code, field) in cases {
        let response = app
            .post("/v1/visitor-bookings", &ana, request.clone())
            .await;
        let p = problem(response, 422).await;
        assert_eq!(p["code"], code, "for {request}: {p}");
        if let Some(field) = field {
            assert_eq!(p["field"], field, "for {request}: {p}");
            assert_eq!(p["errors"][0]["field"], field);
        }
    }
    assert_eq!(app.outbox_rows().await, 0, "nothing invalid was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_and_a_body_of_another_type_is_415() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    for broken in ["{\"visitor\":", "not json", "{} trailing", ""] {
        let response = app
            .client
            .post(app.url("/v1/visitor-bookings"))
            .bearer_auth(&ana)
            .header("content-type", "application/json")
            .body(broken)
            .send()
            .await
            .unwrap();
        assert_eq!(
            problem(response, 400).await["code"],
            "malformed_json",
            "for {broken:?}"
        );
    }
    let response = app
        .client
        .post(app.url("/v1/visitor-bookings"))
        .bearer_auth(&ana)
        .header("content-type", "text/plain")
        .body(visit(false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(response, 415).await["code"],
        "unsupported_media_type"
    );
    let response = app
        .client
        .post(app.url("/v1/visitor-bookings"))
        .bearer_auth(&ana)
        .send()
        .await
        .unwrap();
    problem(response, 415).await;
    let huge = json!({"visitor": {"name": "x".repeat(100_000), "email": "d@x.example"}});
    let response = app.post("/v1/visitor-bookings", &ana, huge).await;
    assert_eq!(problem(response, 413).await["code"], "payload_too_large");
    app.stop().await;
}

#[tokio::test]
async fn bad_admin_input_is_named() {
    let app = spawn_app_offline().await;
    let manager = app.manager();
    let building = |tz: &str, emails: Value| json!({"name": "Harbour View", "timezone": tz, "manager_emails": emails});
    let path = format!("/v1/buildings/{BUILDING}");
    let p = problem(
        app.put(&path, &manager, building("Mars/Olympus", json!([])))
            .await,
        422,
    )
    .await;
    assert_eq!(
        code_and_field(&p),
        (Some("invalid_timezone"), Some("timezone"))
    );
    let p = problem(
        app.put(
            &path,
            &manager,
            building("UTC", json!(["ok@x.example", "nope"])),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "manager_emails[1]");
    let p = problem(
        app.put(&path, &manager, json!({"name": "", "timezone": "Nowhere"}))
            .await,
        422,
    )
    .await;
    assert_eq!(p["code"], "validation_failed");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2);
    let p = problem(
        app.put(
            &path,
            &manager,
            json!({"name": "X", "timezone": "UTC", "double_booking_policy": "sometimes"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "double_booking_policy");
    // Ids are [A-Za-z0-9_-]{1,64}.
    app.put(&path, &manager, building("UTC", json!([]))).await;
    let p = problem(
        app.put(
            "/v1/apartments/apt%20501",
            &manager,
            json!({"access_control_id": "1"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(code_and_field(&p), (Some("invalid_id"), Some("id")));
    let p = problem(
        app.put(
            &format!("/v1/facilities/{}", "f".repeat(65)),
            &manager,
            json!({"name": "Gym"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "id");
    let p = problem(
        app.put(
            "/v1/residents/ana",
            &manager,
            json!({"name": "Ana", "email": "a@x.example", "apartment_id": "apt.501"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["field"], "apartment_id");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_problems_too() {
    let app = spawn_app_offline().await;
    let manager = app.manager();
    assert_eq!(
        problem(app.get("/v1/nothing-here", &manager).await, 404).await["code"],
        "route_not_found"
    );
    let response = app
        .send(
            Method::PUT,
            "/v1/visitor-bookings",
            Some(&manager),
            Some(&json!({})),
        )
        .await;
    assert_eq!(problem(response, 405).await["code"], "method_not_allowed");
    assert_eq!(
        problem(
            app.get("/v1/visitor-bookings/not-a-uuid", &manager).await,
            404
        )
        .await["code"],
        "booking_not_found"
    );
    let random = uuid::Uuid::new_v4();
    problem(
        app.get(&format!("/v1/facility-bookings/{random}"), &manager)
            .await,
        404,
    )
    .await;
    app.stop().await;
}
