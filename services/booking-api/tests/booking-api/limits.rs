//! Bounds on what a client may ask (`CONNECX__LIMITS__*`): how long a visit lasts, how far ahead
//! a booking starts, how many live bookings a resident holds. A refused request stores nothing.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::support::{
    body, booking_path, facility_booking, local_tomorrow, problem, spawn_app_offline,
    spawn_app_offline_with, visit_between,
};

#[tokio::test]
async fn a_visit_longer_than_the_limit_or_too_far_ahead_is_refused_and_nothing_is_stored() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let (starts_at, _) = local_tomorrow(18, 22);
    let starts = chrono::DateTime::parse_from_rfc3339(&starts_at).unwrap();
    let at = |d: Duration| (starts + d).to_rfc3339();
    let outbox_before = app.outbox_rows().await;

    // 72 hours is the default limit: exactly that is fine, a second more is not.
    let longest = app
        .post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&starts_at, &at(Duration::hours(72))),
        )
        .await;
    assert_eq!(longest.status(), 201, "{}", longest.text().await.unwrap());
    let too_long = app
        .post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&starts_at, &at(Duration::hours(72) + Duration::seconds(1))),
        )
        .await;
    let too_long = problem(too_long, 422).await;
    assert_eq!(too_long["code"], "window_too_long");
    assert_eq!(too_long["field"], "ends_at");

    // A year ahead (365 days) at most; the year 9998 and 10000 not at all.
    let far = (Utc::now() + Duration::days(366)).to_rfc3339();
    let far_end = (Utc::now() + Duration::days(366) + Duration::hours(2)).to_rfc3339();
    for (starts_at, ends_at) in [
        (far.as_str(), far_end.as_str()),
        ("9998-01-01T10:00:00Z", "9998-01-01T12:00:00Z"),
        ("+10000-01-01T10:00:00Z", "+10000-01-01T12:00:00Z"),
    ] {
        let answer = app
            .post(
                "/v1/visitor-bookings",
                &ana,
                visit_between(starts_at, ends_at),
            )
            .await;
        let refused = problem(answer, 422).await;
        assert_eq!(refused["code"], "too_far_ahead", "{starts_at}: {refused}");
        assert_eq!(refused["field"], "starts_at");
    }
    assert_eq!(
        app.outbox_rows().await,
        outbox_before + 1,
        "only the 72-hour visit was stored and published"
    );

    // A change is held to the same bounds.
    let id = body(
        app.post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&starts_at, &at(Duration::hours(2))),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stretched = app
        .patch(
            &format!("/v1/visitor-bookings/{id}"),
            &ana,
            json!({"ends_at": at(Duration::hours(100))}),
        )
        .await;
    assert_eq!(problem(stretched, 422).await["code"], "window_too_long");
    let moved = app
        .patch(
            &format!("/v1/visitor-bookings/{id}"),
            &ana,
            json!({"starts_at": "9998-01-01T10:00:00Z", "ends_at": "9998-01-01T12:00:00Z"}),
        )
        .await;
    assert_eq!(problem(moved, 422).await["code"], "too_far_ahead");
}

#[tokio::test]
async fn a_facility_booking_too_far_ahead_is_refused() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let answer = app
        .post(
            "/v1/facility-bookings",
            &ana,
            json!({"facility_id": "gym", "starts_at": "9998-01-01T10:00:00+11:00",
                   "ends_at": "9998-01-01T12:00:00+11:00"}),
        )
        .await;
    let refused = problem(answer, 422).await;
    assert_eq!(refused["code"], "too_far_ahead");
    assert_eq!(refused["field"], "starts_at");
}

#[tokio::test]
async fn a_resident_holds_at_most_the_limit_of_live_bookings_of_each_kind() {
    let app = spawn_app_offline_with(|settings| settings.limits.max_live_bookings = 3).await;
    app.seed().await;
    let ana = app.resident_ana();
    let manager = app.manager();
    let mut ids = Vec::new();
    for hour in [10, 12, 14] {
        let (starts_at, ends_at) = local_tomorrow(hour, hour + 1);
        let visit = visit_between(&starts_at, &ends_at);
        let created = app.book("/v1/visitor-bookings", &ana, visit).await;
        let path = booking_path("/v1/visitor-bookings", &created);
        // The answer is the booking as stored.
        assert_eq!(body(app.get(&path, &ana).await).await, created);
        ids.push(path);
    }
    let (starts_at, ends_at) = local_tomorrow(16, 17);
    let later = visit_between(&starts_at, &ends_at);
    let refused = app
        .post_refused("/v1/visitor-bookings", &ana, later.clone(), 422)
        .await;
    assert_eq!(refused["code"], "too_many_live_bookings");
    // Also when a manager books for her: it is what she holds that counts.
    let mut for_ana = later.clone();
    for_ana["resident_id"] = json!("ana");
    let by_manager = app.post("/v1/visitor-bookings", &manager, for_ana).await;
    assert_eq!(
        problem(by_manager, 422).await["code"],
        "too_many_live_bookings"
    );
    // Another resident is not held by Ana's bookings.
    app.book("/v1/visitor-bookings", &app.resident_bo(), later.clone())
        .await;
    // A cancelled booking is not live: one more fits.
    let cancelled = app.delete(&ids[0], &ana).await;
    assert!(cancelled.status().is_success());
    app.book("/v1/visitor-bookings", &ana, later).await;

    // Facility bookings count on their own: three fit, the fourth does not.
    for hour in [8, 10, 12] {
        let games_room = facility_booking("games-room", &local_tomorrow(hour, hour + 1));
        app.book("/v1/facility-bookings", &ana, games_room).await;
    }
    let fourth = facility_booking("games-room", &local_tomorrow(14, 15));
    let refused = app
        .post_refused("/v1/facility-bookings", &ana, fourth, 422)
        .await;
    assert_eq!(refused["code"], "too_many_live_bookings");
}

#[tokio::test]
async fn concurrent_creations_never_pass_the_live_bookings_limit_together() {
    let app = spawn_app_offline_with(|settings| {
        settings.limits.max_live_bookings = 5;
        settings.shared.database.max_connections = 10;
    })
    .await;
    app.seed().await;
    let ana = app.resident_ana();
    let outbox_before = app.outbox_rows().await;
    let requests = (0..12).map(|n| {
        let (starts_at, ends_at) = local_tomorrow(6 + n, 7 + n);
        app.post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&starts_at, &ends_at),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|a| a.status() == 201).count();
    let refused = answers.iter().filter(|a| a.status() == 422).count();
    assert_eq!((created, refused), (5, 7));
    // A creation stores its booking and its event in one statement: a refused one neither.
    assert_eq!(app.rows("visitor_bookings").await, 5);
    assert_eq!(app.outbox_rows().await, outbox_before + 5);
}

#[tokio::test]
async fn a_resident_writing_too_fast_gets_429_with_retry_after_and_others_are_not_held() {
    let app = spawn_app_offline_with(|settings| {
        settings.limits.writes_per_minute = 30;
        settings.limits.write_burst = 3;
    })
    .await;
    app.seed().await;
    let ana = app.resident_ana();
    let visit = |hour: u32| {
        let (starts_at, ends_at) = local_tomorrow(hour, hour + 1);
        visit_between(&starts_at, &ends_at)
    };
    // The burst: a create, a change and a cancel are all writes.
    let created = app.post("/v1/visitor-bookings", &ana, visit(10)).await;
    assert_eq!(created.status(), 201);
    let id = body(created).await["id"].as_str().unwrap().to_owned();
    let (_, later) = local_tomorrow(10, 12);
    let changed = app
        .patch(
            &format!("/v1/visitor-bookings/{id}"),
            &ana,
            json!({"ends_at": later}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let cancelled = app
        .delete(&format!("/v1/visitor-bookings/{id}"), &ana)
        .await;
    assert_eq!(cancelled.status(), 200);
    let outbox = app.outbox_rows().await;

    let refused = app.post("/v1/visitor-bookings", &ana, visit(14)).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(problem(refused, 429).await["code"], "too_many_requests");
    let facility = app
        .post(
            "/v1/facility-bookings",
            &ana,
            json!({"facility_id": "games-room", "starts_at": local_tomorrow(8, 9).0,
                   "ends_at": local_tomorrow(8, 9).1}),
        )
        .await;
    assert_eq!(
        facility.status(),
        429,
        "one allowance for both kinds of booking"
    );
    assert_eq!(app.outbox_rows().await, outbox, "nothing stored");

    // Another resident, and the manager, write as they like meanwhile.
    let bo = app
        .post("/v1/visitor-bookings", &app.resident_bo(), visit(15))
        .await;
    assert_eq!(bo.status(), 201);
    let manager = app.manager();
    for hour in 6..12 {
        let mut for_cy = visit(hour);
        for_cy["resident_id"] = json!("cy");
        let answer = app.post("/v1/visitor-bookings", &manager, for_cy).await;
        assert_eq!(answer.status(), 201, "managers are not limited");
    }

    // After the wait it names, Ana may write again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let again = app.post("/v1/visitor-bookings", &ana, visit(16)).await;
    assert_eq!(again.status(), 201);
}

/// The next change back from daylight saving in Sydney: the date whose 02:30 happens twice.
fn next_sydney_fall_back() -> chrono::NaiveDate {
    use chrono::TimeZone;
    let zone = chrono_tz::Australia::Sydney;
    let today = Utc::now().with_timezone(&zone).date_naive();
    (1..=366)
        .map(|n| today + Duration::days(n))
        .find(|day| {
            matches!(
                zone.from_local_datetime(&day.and_hms_opt(2, 30, 0).unwrap()),
                chrono::LocalResult::Ambiguous(..)
            )
        })
        .expect("Sydney falls back once a year")
}

#[tokio::test]
async fn a_window_running_backwards_on_the_buildings_clock_is_refused_and_fractions_of_a_second_are_cut()
 {
    let app = spawn_app_offline().await;
    app.seed().await;
    let ana = app.resident_ana();
    let day = next_sydney_fall_back();
    // 02:30 before the change (+11:00) to 02:15 after it (+10:00): 45 minutes in UTC, 15
    // minutes backwards on the wall clock iPassan and Salto are given.
    let (starts_at, ends_at) = (
        format!("{day}T02:30:00+11:00"),
        format!("{day}T02:15:00+10:00"),
    );
    let visit = app
        .post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&starts_at, &ends_at),
        )
        .await;
    let refused = problem(visit, 422).await;
    assert_eq!(refused["code"], "window_not_representable");
    assert_eq!(refused["field"], "ends_at");
    let facility = app
        .post(
            "/v1/facility-bookings",
            &ana,
            json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at}),
        )
        .await;
    assert_eq!(
        problem(facility, 422).await["code"],
        "window_not_representable"
    );
    assert_eq!(app.outbox_rows().await, 0);

    // Fractions of a second: cut from both ends, in the answer and in the event alike.
    let (starts_at, ends_at) = local_tomorrow(18, 20);
    let with_fraction = |t: &str| t.replacen(":00+", ":00.750+", 1);
    let created = app
        .post(
            "/v1/visitor-bookings",
            &ana,
            visit_between(&with_fraction(&starts_at), &with_fraction(&ends_at)),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created = body(created).await;
    let whole = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&Utc)
    };
    assert_eq!(
        whole(created["starts_at"].as_str().unwrap()),
        whole(&starts_at)
    );
    assert_eq!(whole(created["ends_at"].as_str().unwrap()), whole(&ends_at));
    let event: serde_json::Value = sqlx::query_scalar("SELECT envelope FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let event = event.to_string();
    assert!(!event.contains(".750"), "{event}");
    let start = whole(&starts_at).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(event.contains(&start), "{start} in {event}");
}
