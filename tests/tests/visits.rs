//! Visitor bookings give real access through iPassan (issue 4's story), end to end: booking-api,
//! ipassan-sync, notifier and the iPassan simulator, on real RabbitMQ, PostgreSQL and SMTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::mail_sink::ReceivedMail;
use tests::{IPASSAN_SITE, LOBBY, Stack, assert_contains, tomorrow_evening};

const RESIDENT: &str = "ana@residents.example";
const VISITOR: &str = "bo@visitors.example";

fn at(rfc3339: &str, offset_minutes: i64) -> String {
    let time: DateTime<FixedOffset> = DateTime::parse_from_rfc3339(rfc3339).unwrap();
    (time + chrono::Duration::minutes(offset_minutes)).to_rfc3339()
}

/// Books Bo for tomorrow evening as Ana, waiting for the access outcome like the app's pop-up.
async fn book(stack: &Stack, starts_at: &str, ends_at: &str) -> Value {
    let response = stack
        .http
        .post(format!("{}/v1/visitor-bookings", stack.api))
        .bearer_auth(stack.ana())
        .header("Prefer", "wait=5")
        .json(&json!({"visitor": {"name": "Bo Tan", "email": VISITOR},
                      "starts_at": starts_at, "ends_at": ends_at, "provide_access": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

/// Books Bo (as [`book`]) and waits for the two mails of the grant: the booking's id and PIN.
async fn book_and_wait_for_the_mails(
    stack: &Stack,
    starts_at: &str,
    ends_at: &str,
) -> (String, String) {
    let booking = book(stack, starts_at, ends_at).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    let pin = booking["access"]["pin"].as_str().unwrap().to_owned();
    stack.mail.wait_for(2, Duration::from_secs(15)).await;
    (id, pin)
}

/// The text of `mail`'s calendar invite (`text/calendar`).
fn invite_of(mail: &ReceivedMail) -> String {
    let invite = mail.attachment_of_type("text/calendar").unwrap();
    String::from_utf8_lossy(&invite.content).into_owned()
}

async fn door_opens(stack: &Stack, pin: &str, when: &str) -> bool {
    let control = stack.ipassan_sim.control();
    control.set_clock(when).await.unwrap();
    control
        .try_door(IPASSAN_SITE, LOBBY, pin)
        .await
        .unwrap()
        .opens
}

#[tokio::test]
async fn a_synced_resident_books_a_visitor_and_the_code_opens_the_door_during_the_visit_only() {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let booking = book(&stack, &starts_at, &ends_at).await;

    // The pop-up shows the code straight away.
    assert_eq!(booking["access"]["status"], "granted", "{booking}");
    let pin = booking["access"]["pin"].as_str().expect("a PIN").to_owned();
    assert!(
        pin.len() == 6 && pin.chars().all(|c| c.is_ascii_digit()),
        "{pin}"
    );

    // iPassan has the visitor, attached to Ana, with her profile, for exactly the window.
    let state = stack.ipassan_sim.control().state().await.unwrap();
    let visitor = &state.sites[IPASSAN_SITE].visitors[0];
    assert_eq!(visitor.visitee_id, "p-ana");
    assert_eq!(visitor.access_profile_id, "ap-501");
    assert_eq!(visitor.external_ref, booking["id"].as_str().unwrap());
    assert_eq!(visitor.valid_from.format("%H:%M").to_string(), "18:00");
    assert_eq!(visitor.valid_to.format("%H:%M").to_string(), "22:00");

    // Both are mailed the code; the visitor gets an invite.
    let resident_mail = stack
        .mail
        .wait_for_mail_to(RESIDENT, Duration::from_secs(15))
        .await
        .expect("resident mail");
    assert_contains(&resident_mail.text_body, &pin);
    assert_contains(&resident_mail.text_body, "18:00–22:00");
    let visitor_mail = stack
        .mail
        .wait_for_mail_to(VISITOR, Duration::from_secs(15))
        .await
        .expect("visitor mail");
    assert!(visitor_mail.text_body.contains(&pin));
    assert!(visitor_mail.attachment_of_type("text/calendar").is_some());

    // The code works inside the window, not before, not after.
    assert!(door_opens(&stack, &pin, &at(&starts_at, 30)).await);
    assert!(!door_opens(&stack, &pin, &at(&starts_at, -5)).await);
    assert!(!door_opens(&stack, &pin, &at(&ends_at, 1)).await);
    assert!(
        stack.mail.mails_to(tests::MANAGER_EMAIL).is_empty(),
        "nothing needed the manager"
    );
}

#[tokio::test]
async fn rescheduling_moves_the_window_keeps_the_code_and_mails_both_again() {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let (id, pin) = book_and_wait_for_the_mails(&stack, &starts_at, &ends_at).await;

    let (new_start, new_end) = (at(&starts_at, 60), at(&ends_at, 60));
    let (status, patched) = stack
        .send(
            Method::PATCH,
            &format!("/v1/visitor-bookings/{id}"),
            &stack.ana(),
            Some(json!({"starts_at": new_start, "ends_at": new_end})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let mails = stack.mail.wait_for(4, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 4);
    let updated_visitor_mail = stack.mail.mails_to(VISITOR).pop().unwrap();
    // The same code.
    assert_contains(&updated_visitor_mail.text_body, &pin);
    assert_contains(&updated_visitor_mail.text_body, "19:00–23:00");
    let ics = invite_of(&updated_visitor_mail);
    assert!(ics.contains("SEQUENCE:2"), "{ics}");

    let shown = stack
        .access_becomes(&format!("/v1/visitor-bookings/{id}"), "granted")
        .await;
    assert_eq!(shown["access"]["pin"], pin.as_str());
    assert!(
        door_opens(&stack, &pin, &at(&new_end, -10)).await,
        "inside the new window"
    );
    assert!(
        !door_opens(&stack, &pin, &at(&starts_at, 10)).await,
        "not in the old first hour"
    );
}

#[tokio::test]
async fn cancelling_stops_the_code_at_once_and_the_visitor_is_told() {
    let stack = Stack::start().await;
    let (starts_at, ends_at) = tomorrow_evening();
    let (id, pin) = book_and_wait_for_the_mails(&stack, &starts_at, &ends_at).await;

    let (status, cancelled) = stack.cancel(&format!("/v1/visitor-bookings/{id}")).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let mails = stack.mail.wait_for(4, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 4);
    let to_visitor = stack.mail.mails_to(VISITOR).pop().unwrap();
    assert_contains(&to_visitor.subject, "cancelled");
    let ics = invite_of(&to_visitor);
    assert!(ics.contains("METHOD:CANCEL"), "{ics}");
    assert!(
        stack
            .mail
            .mails_to(RESIDENT)
            .pop()
            .unwrap()
            .text_body
            .contains("is cancelled")
    );

    let state = stack.ipassan_sim.control().state().await.unwrap();
    assert!(
        state.sites[IPASSAN_SITE].visitors[0].credential.is_none(),
        "iPassan shows no credential"
    );
    assert!(
        !door_opens(&stack, &pin, &at(&starts_at, 30)).await,
        "the code no longer opens the door"
    );
    let shown = stack
        .access_becomes(&format!("/v1/visitor-bookings/{id}"), "revoked")
        .await;
    assert_eq!(shown["state"], "cancelled");
}

#[tokio::test]
async fn a_resident_not_synced_to_ipassan_is_refused_at_once_and_nothing_is_sent() {
    let stack = Stack::start().await;
    let (status, _) = stack
        .send(
            Method::PUT,
            "/v1/residents/cy",
            &stack.manager(),
            Some(json!({"name": "Cy Ng", "email": "cy@residents.example", "apartment_id": "apt-501", "ipassan_person_id": null})),
        )
        .await;
    assert!(status == 200 || status == 201);
    let cy = stack.token(contracts::Role::Resident, "cy", Some("apt-501"));
    let mut events = stack.broker.tap("visitor_booking.#").await;
    let (starts_at, ends_at) = tomorrow_evening();
    let (status, problem) = stack
        .send(
            Method::POST,
            "/v1/visitor-bookings",
            &cy,
            Some(json!({"visitor": {"name": "Di", "email": "di@visitors.example"}, "starts_at": starts_at, "ends_at": ends_at, "provide_access": true})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["code"], "resident_not_synced_to_ipassan",
        "{problem}"
    );
    let (_, list) = stack
        .send(Method::GET, "/v1/visitor-bookings", &cy, None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing stored");
    assert!(
        events.next(Duration::from_secs(2)).await.is_none(),
        "nothing published"
    );
    assert!(stack.mail.mails().is_empty(), "nobody mailed");
}
