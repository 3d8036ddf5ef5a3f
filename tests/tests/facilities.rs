//! Facility bookings give real access through Salto (issue 5's story), end to end: booking-api,
//! salto-sync, notifier and the Salto SHIP simulator, on real RabbitMQ, PostgreSQL and SMTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use reqwest::Method;
use serde_json::{Value, json};
use tests::{
    ACCESS_LEVEL, MANAGER_EMAIL, Stack, ZONE, assert_contains, days_later, eventually, json_answer,
    tomorrow_evening,
};

const RESIDENT: &str = "ana@residents.example";

/// `rfc3339` plus `days` and `minutes`, as the Salto server's local wall-clock time.
fn local(rfc3339: &str, days: i64, minutes: i64) -> String {
    let time: DateTime<FixedOffset> = DateTime::parse_from_rfc3339(rfc3339).unwrap();
    let shifted = time + chrono::Duration::days(days) + chrono::Duration::minutes(minutes);
    shifted
        .naive_local()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

async fn book(stack: &Stack, token: &str, body: Value) -> Value {
    let response = stack
        .http
        .post(format!("{}/v1/facility-bookings", stack.api))
        .bearer_auth(token)
        .header("Prefer", "wait=5")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let booking: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{booking}");
    booking
}

/// Books the games room as Ana for `starts_at`–`ends_at` (as [`book`]).
async fn book_games_room(stack: &Stack, starts_at: &str, ends_at: &str) -> Value {
    book(
        stack,
        &stack.ana(),
        json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at}),
    )
    .await
}

/// Checks at each local time whether the apartment's card opens the games room, as expected
/// (`when` says which moment it is).
async fn assert_card_opens(stack: &Stack, expected: &[(String, bool, &str)]) {
    for (at_local, opens, when) in expected {
        assert_eq!(
            card_opens(stack, at_local).await,
            *opens,
            "{when} ({at_local})"
        );
    }
}

async fn card_opens(stack: &Stack, at_local: &str) -> bool {
    let sim = stack.salto_sim.url();
    let base = sim.trim_end_matches('/');
    stack
        .http
        .post(format!("{base}/_sim/clock"))
        .json(&json!({"now": at_local}))
        .send()
        .await
        .unwrap();
    let card = stack
        .http
        .post(format!("{base}/_sim/doors/{ZONE}/card"))
        .json(&json!({"group": ACCESS_LEVEL}));
    let answer = json_answer(card).await;
    answer["opens"].as_bool().unwrap_or(false)
}

async fn salto_permissions(stack: &Stack) -> Vec<Value> {
    let base = stack.salto_sim.url();
    let state = json_answer(
        stack
            .http
            .get(format!("{}/_sim/state", base.trim_end_matches('/'))),
    )
    .await;
    state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["ext_id"] == ACCESS_LEVEL)
        .map(|g| g["zones"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_booked_facility_opens_to_the_apartments_cards_on_that_date_inside_the_hours_only() {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let booking = book_games_room(&stack, &starts_at, &ends_at).await;
    assert_eq!(booking["access"]["status"], "granted", "{booking}");

    let permissions = salto_permissions(&stack).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert_eq!(permissions[0]["zone"], ZONE);

    assert_card_opens(
        &stack,
        &[
            (local(&starts_at, 0, 30), true, "inside the hours"),
            (local(&starts_at, 0, -30), false, "before the hours"),
            (local(&ends_at, 0, 5), false, "after the hours"),
            (local(&starts_at, 1, 30), false, "same hours, next day"),
        ],
    )
    .await;

    let mail = stack
        .mail
        .wait_for_mail_to(RESIDENT, Duration::from_secs(15))
        .await
        .expect("resident told");
    assert_contains(&mail.text_body, "is confirmed");
    assert!(stack.mail.mails_to(MANAGER_EMAIL).is_empty());
}

#[tokio::test]
async fn a_second_booking_while_one_is_held_waits_the_manager_is_told_and_it_is_granted_when_the_first_is_cancelled()
 {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let first = book_games_room(&stack, &starts_at, &ends_at).await;
    assert_eq!(first["access"]["status"], "granted", "{first}");
    // The same apartment books the same facility for the next evening: Salto can hold only one.
    let second = book(
        &stack,
        &stack.manager(),
        json!({"facility_id": "games-room", "apartment_id": "apt-501",
               "starts_at": days_later(&starts_at, 1), "ends_at": days_later(&ends_at, 1)}),
    )
    .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(second["access"]["status"], "deferred", "{second}");
    assert_eq!(second["access"]["held_by"], first_id.as_str());

    let manager = stack
        .mail
        .wait_for_mail_to(MANAGER_EMAIL, Duration::from_secs(15))
        .await
        .expect("manager told");
    assert_contains(&manager.subject, "Double booking");
    assert_contains(&manager.text_body, "No action is needed");
    assert!(manager.text_body.contains(&first_id) && manager.text_body.contains(&second_id));
    // Both bookings' dates, so the manager sees when the slot frees.
    for days in [0, 1] {
        let date = DateTime::parse_from_rfc3339(&days_later(&starts_at, days))
            .unwrap()
            .format("%A %-d %B %Y")
            .to_string();
        assert_contains(&manager.text_body, &date);
    }

    let (status, _) = stack
        .cancel(&format!("/v1/facility-bookings/{first_id}"))
        .await;
    assert_eq!(status, 200);
    stack
        .access_becomes(&format!("/v1/facility-bookings/{second_id}"), "granted")
        .await;
    assert_card_opens(
        &stack,
        &[
            (local(&starts_at, 1, 30), true, "the second evening opens"),
            (
                local(&starts_at, 0, 30),
                false,
                "the cancelled evening does not",
            ),
        ],
    )
    .await;
    assert_eq!(
        salto_permissions(&stack).await.len(),
        1,
        "still one permission for the zone"
    );
}

#[tokio::test]
async fn cancelling_removes_the_permission_and_rescheduling_moves_it() {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let booking = book_games_room(&stack, &starts_at, &ends_at).await;
    let id = booking["id"].as_str().unwrap().to_owned();

    let (status, patched) = stack
        .send(
            Method::PATCH,
            &format!("/v1/facility-bookings/{id}"),
            &stack.ana(),
            Some(
                json!({"starts_at": days_later(&starts_at, 2), "ends_at": days_later(&ends_at, 2)}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    eventually(
        "the permission to move",
        Duration::from_secs(15),
        || async { (card_opens(&stack, &local(&starts_at, 2, 30)).await).then_some(()) },
    )
    .await;
    assert!(
        !card_opens(&stack, &local(&starts_at, 0, 30)).await,
        "the old date no longer opens"
    );

    let (status, _) = stack.cancel(&format!("/v1/facility-bookings/{id}")).await;
    assert_eq!(status, 200);
    eventually(
        "the permission to be removed",
        Duration::from_secs(15),
        || async { salto_permissions(&stack).await.is_empty().then_some(()) },
    )
    .await;
    assert!(!card_opens(&stack, &local(&starts_at, 2, 30)).await);
}

#[tokio::test]
async fn a_booking_refused_for_a_missing_access_control_id_reaches_the_manager_once_a_day() {
    let stack = Stack::start().await;
    let manager = stack.manager();
    let (status, _) = stack
        .send(
            Method::PUT,
            "/v1/facilities/sauna",
            &manager,
            Some(json!({"name": "Sauna"})),
        )
        .await;
    assert_eq!(status, 201);
    let (starts_at, ends_at) = tomorrow_evening();
    let ask = || async {
        stack
            .send(
                Method::POST,
                "/v1/facility-bookings",
                &stack.ana(),
                Some(json!({"facility_id": "sauna", "starts_at": starts_at, "ends_at": ends_at})),
            )
            .await
    };
    let (status, problem) = ask().await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "facility_access_control_id_missing");

    let mail = stack
        .mail
        .wait_for_mail_to(MANAGER_EMAIL, Duration::from_secs(15))
        .await
        .expect("the manager is told");
    assert_contains(&mail.subject, "Sauna");
    for expected in [
        "apt-501",
        "Ana Lee",
        "PUT /v1/facilities/sauna",
        "access_control_facility_id",
    ] {
        assert_contains(&mail.text_body, expected);
    }

    // Asking again the same day answers the same, and does not mail the manager again.
    let (status, _) = ask().await;
    assert_eq!(status, 422);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.mail.mails_to(MANAGER_EMAIL).len(), 1);
    assert!(
        stack.mail.mails_to(RESIDENT).is_empty(),
        "the booker had the answer already"
    );
    let (_, list) = stack
        .send(Method::GET, "/v1/facility-bookings", &stack.ana(), None)
        .await;
    assert_eq!(list["items"], json!([]), "nothing was booked");

    // Once the manager sets the ID, the booking goes through.
    let (status, _) = stack
        .send(
            Method::PUT,
            "/v1/facilities/sauna",
            &manager,
            Some(json!({"name": "Sauna", "access_control_facility_id": "GYM"})),
        )
        .await;
    assert_eq!(status, 200);
    let booking = book(
        &stack,
        &stack.ana(),
        json!({"facility_id": "sauna", "starts_at": starts_at, "ends_at": ends_at}),
    )
    .await;
    assert_eq!(booking["access"]["status"], "granted", "{booking}");
}
