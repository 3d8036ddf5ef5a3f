//! Result events become the mails residents, visitors and managers expect, once each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MANAGER, publish, start_notifier, visit};
use contracts::{
    AccessFailure, Apartment, BookedBy, BookingState, DoubleBookingPolicy, Envelope, Event,
    Facility, FacilityAccessResult, FacilityBooking, RefusedFacilityRequest, Role,
    VisitorAccessResult, VisitorBooking,
};
use uuid::Uuid;

const RESIDENT: &str = "ana@example.com";
const VISITOR: &str = "bo@example.com";

fn visitor_booking() -> VisitorBooking {
    match visit(&[MANAGER]).event {
        Event::VisitorBookingCreated(booking) => booking,
        _ => unreachable!(),
    }
}

fn visitor_result(
    booking_id: Uuid,
    version: i64,
    make: fn(VisitorAccessResult) -> Event,
    pin: Option<&str>,
) -> Envelope {
    Envelope::new(
        booking_id,
        version,
        make(VisitorAccessResult {
            booking: visitor_booking(),
            pin: pin.map(String::from),
            failure: None,
        }),
    )
}

fn facility_result(
    policy: DoubleBookingPolicy,
    held_by: Option<Uuid>,
    failure: Option<AccessFailure>,
) -> FacilityAccessResult {
    let mut building = visitor_booking().building;
    building.double_booking_policy = policy;
    FacilityAccessResult {
        booking: FacilityBooking {
            building,
            window: visitor_booking().window,
            facility: Facility {
                id: "games-room".into(),
                name: "Games room".into(),
                zone_id: "GAMES-ROOM".into(),
            },
            apartment: Apartment {
                id: "apt-501".into(),
                access_level_id: "501-56".into(),
            },
            booked_by: BookedBy {
                user_id: "ana".into(),
                role: Role::Resident,
                name: Some("Ana Lee".into()),
                email: Some(RESIDENT.into()),
            },
            state: BookingState::Booked,
        },
        held_by,
        // The holder's window, when there is a holder: the same day, 07:00–08:30 local.
        held_by_window: held_by.map(|_| {
            let mut window = visitor_booking().window;
            let day = window.local_starts_at.date();
            window.local_starts_at = day.and_hms_opt(7, 0, 0).unwrap();
            window.local_ends_at = day.and_hms_opt(8, 30, 0).unwrap();
            window
        }),
        failure,
    }
}

#[tokio::test]
async fn a_granted_visit_mails_the_code_and_an_invite_to_resident_and_visitor_once() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    let granted = visitor_result(booking, 1, Event::VisitorAccessGranted, Some("048213"));
    publish(&stack, &granted).await;
    publish(&stack, &granted).await; // delivered twice

    let mails = stack.mail.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 2);
    let resident = stack.mail.mails_to(RESIDENT).pop().expect("resident mail");
    assert!(
        resident.text_body.contains("048213"),
        "{}",
        resident.text_body
    );
    assert!(resident.text_body.contains("Bo Tan"));
    let visitor = stack.mail.mails_to(VISITOR).pop().expect("visitor mail");
    assert!(
        visitor.text_body.contains("048213"),
        "{}",
        visitor.text_body
    );
    assert!(
        visitor
            .html_body
            .as_deref()
            .unwrap_or_default()
            .contains("048213")
    );
    let invite = visitor
        .attachment_of_type("text/calendar")
        .expect("an .ics invite");
    let ics = String::from_utf8_lossy(&invite.content);
    assert!(ics.contains("METHOD:REQUEST"), "{ics}");
    assert!(
        ics.contains(&format!("UID:{booking}@visits.connecx")),
        "{ics}"
    );
    assert!(ics.contains("SEQUENCE:1"), "{ics}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stack.mail.mails().len(),
        2,
        "the duplicate delivery mailed nobody"
    );
}

#[tokio::test]
async fn a_reschedule_updates_the_invite_and_a_cancellation_cancels_it() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    publish(
        &stack,
        &visitor_result(booking, 1, Event::VisitorAccessGranted, Some("111111")),
    )
    .await;
    stack.mail.wait_for(2, Duration::from_secs(15)).await;
    publish(
        &stack,
        &visitor_result(booking, 2, Event::VisitorAccessUpdated, Some("111111")),
    )
    .await;
    stack.mail.wait_for(4, Duration::from_secs(15)).await;
    publish(
        &stack,
        &visitor_result(booking, 3, Event::VisitorAccessRevoked, None),
    )
    .await;
    let mails = stack.mail.wait_for(6, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 6);

    let to_visitor = stack.mail.mails_to(VISITOR);
    let ics: Vec<String> = to_visitor
        .iter()
        .map(|m| {
            String::from_utf8_lossy(
                &m.attachment_of_type("text/calendar")
                    .expect("invite")
                    .content,
            )
            .into_owned()
        })
        .collect();
    assert!(
        ics[1].contains("METHOD:REQUEST") && ics[1].contains("SEQUENCE:2"),
        "{}",
        ics[1]
    );
    assert!(
        ics[2].contains("METHOD:CANCEL") && ics[2].contains("SEQUENCE:3"),
        "{}",
        ics[2]
    );
    assert!(
        ics.iter()
            .all(|i| i.contains(&format!("UID:{booking}@visits.connecx"))),
        "same UID throughout"
    );
    assert!(
        to_visitor[2].subject.contains("cancelled"),
        "{}",
        to_visitor[2].subject
    );
    let to_resident = stack.mail.mails_to(RESIDENT);
    assert!(
        to_resident[2].text_body.contains("is cancelled"),
        "{}",
        to_resident[2].text_body
    );
    assert!(
        !to_resident[2].text_body.contains("111111"),
        "no code in the cancellation"
    );
}

#[tokio::test]
async fn a_late_grant_after_a_cancellation_mails_no_code() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    publish(
        &stack,
        &visitor_result(booking, 2, Event::VisitorAccessRevoked, None),
    )
    .await;
    // The visitor never had a code, so only the resident hears of the cancellation.
    stack.mail.wait_for(1, Duration::from_secs(15)).await;
    publish(
        &stack,
        &visitor_result(booking, 1, Event::VisitorAccessGranted, Some("222222")),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.mail.mails().len(), 1);
    assert!(stack.mail.mails_to(VISITOR).is_empty());
    assert!(
        stack
            .mail
            .mails()
            .iter()
            .all(|m| !m.text_body.contains("222222"))
    );
}

#[tokio::test]
async fn a_failed_visit_tells_the_resident_and_the_manager_when_a_person_must_act() {
    let stack = start_notifier().await;
    let mut failed = visitor_result(Uuid::new_v4(), 1, Event::VisitorAccessFailed, None);
    if let Event::VisitorAccessFailed(r) = &mut failed.event {
        r.failure = Some(AccessFailure {
            code: "visitee_has_no_access_profile".into(),
            message: "Ana Lee has no access profile in iPassan".into(),
            needs_manager: true,
        });
    }
    publish(&stack, &failed).await;
    let resident = stack
        .mail
        .wait_for_mail_to(RESIDENT, Duration::from_secs(15))
        .await
        .expect("resident told");
    assert!(
        resident.text_body.contains("no access profile"),
        "{}",
        resident.text_body
    );
    let manager = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("manager told");
    assert!(
        manager.text_body.contains("visitee_has_no_access_profile"),
        "{}",
        manager.text_body
    );
    assert!(manager.subject.contains("Action needed"));
    assert!(
        stack.mail.mails_to(VISITOR).is_empty(),
        "the visitor gets no code and no mail"
    );
}

#[tokio::test]
async fn a_double_booking_tells_the_manager_whether_to_act() {
    let stack = start_notifier().await;
    let holder = Uuid::new_v4();
    let auto = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityAccessDeferred(facility_result(
            DoubleBookingPolicy::Auto,
            Some(holder),
            None,
        )),
    );
    publish(&stack, &auto).await;
    let manager = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("manager told");
    assert!(
        manager.subject.contains("Double booking"),
        "{}",
        manager.subject
    );
    assert!(
        manager.text_body.contains("No action is needed"),
        "{}",
        manager.text_body
    );
    assert!(manager.text_body.contains(&holder.to_string()));
    assert!(manager.text_body.contains(&auto.booking_id.to_string()));
    // Both bookings' dates and hours: the holder's 07:00–08:30 and the new one's.
    assert!(
        manager.text_body.contains("07:00–08:30"),
        "the holder's window: {}",
        manager.text_body
    );
    let Event::FacilityAccessDeferred(deferred) = &auto.event else {
        unreachable!()
    };
    let new_hours = format!(
        "{}–",
        deferred.booking.window.local_starts_at.format("%H:%M")
    );
    assert!(
        manager.text_body.contains(&new_hours),
        "{}",
        manager.text_body
    );
    assert!(
        manager
            .html_body
            .as_deref()
            .unwrap_or_default()
            .contains("07:00–08:30")
    );
    let resident = stack
        .mail
        .wait_for_mail_to(RESIDENT, Duration::from_secs(15))
        .await
        .expect("resident told");
    assert!(
        resident.text_body.contains("automatically"),
        "{}",
        resident.text_body
    );

    let manual = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityAccessDeferred(facility_result(
            DoubleBookingPolicy::Manual,
            Some(holder),
            None,
        )),
    );
    publish(&stack, &manual).await;
    let mails = stack.mail.wait_for(4, Duration::from_secs(15)).await;
    let manual_mail = mails
        .iter()
        .find(|m| m.is_to(MANAGER) && m.text_body.contains(&manual.booking_id.to_string()))
        .expect("second manager mail");
    assert!(
        manual_mail.text_body.contains("Action needed"),
        "{}",
        manual_mail.text_body
    );
}

/// Waits for the manager's mail and checks its text says each of `expected`.
async fn manager_mail_says(stack: &common::Stack, expected: &[&str]) {
    let manager = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("manager told");
    for expected in expected {
        assert!(
            manager.text_body.contains(expected),
            "missing {expected}: {}",
            manager.text_body
        );
    }
}

#[tokio::test]
async fn a_salto_refusal_that_needs_a_person_reaches_the_manager_with_the_ids() {
    let stack = start_notifier().await;
    let failed = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityAccessFailed(facility_result(
            DoubleBookingPolicy::Auto,
            None,
            Some(AccessFailure {
                code: "salto_not_found".into(),
                message: "Salto answered code 11: zone GAMES-ROOM not found".into(),
                needs_manager: true,
            }),
        )),
    );
    publish(&stack, &failed).await;
    manager_mail_says(
        &stack,
        &[
            "code 11",
            "501-56",
            "GAMES-ROOM",
            "apt-501",
            "Games room",
            "What to do",
        ],
    )
    .await;
    let granted = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityAccessGranted(facility_result(DoubleBookingPolicy::Auto, None, None)),
    );
    publish(&stack, &granted).await;
    let mails = stack.mail.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(
        mails.iter().filter(|m| m.is_to(MANAGER)).count(),
        1,
        "a plain grant does not bother the manager"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.is_to(RESIDENT) && m.text_body.contains("is confirmed"))
    );
}

#[tokio::test]
async fn a_booking_refused_for_a_missing_access_control_id_tells_the_manager_what_to_set() {
    let stack = start_notifier().await;
    let booking = facility_result(DoubleBookingPolicy::Auto, None, None).booking;
    let refused = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityRequestRefused(RefusedFacilityRequest {
            building: booking.building.clone(),
            window: booking.window.clone(),
            facility_id: "games-room".into(),
            facility_name: "Games room".into(),
            apartment_id: "apt-501".into(),
            booked_by: booking.booked_by.clone(),
            failure: AccessFailure {
                code: "facility_access_control_id_missing".into(),
                message: "facility games-room has no Access Control Facility ID".into(),
                needs_manager: true,
            },
        }),
    );
    publish(&stack, &refused).await;
    manager_mail_says(
        &stack,
        &[
            "Games room",
            "apt-501",
            "Ana Lee",
            "facility_access_control_id_missing",
            "PUT /v1/facilities/games-room",
            "access_control_facility_id",
            &refused.booking_id.to_string(),
        ],
    )
    .await;
    // The booker had the refusal in the API's answer: no mail to them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.mail.mails_to(RESIDENT).is_empty());
}

#[tokio::test]
async fn the_health_port_says_ready_and_counts_handled_messages() {
    let stack = start_notifier().await;
    let port = stack.health_port.expect("a health port");
    let get = |path: &'static str| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(get("/healthz").await.0, 200);
    // Ready once both consumers are attached (a moment after their queues are declared).
    let mut ready = get("/readyz").await;
    for _ in 0..50 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = get("/readyz").await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    publish(
        &stack,
        &visitor_result(
            Uuid::new_v4(),
            1,
            Event::VisitorAccessGranted,
            Some("333333"),
        ),
    )
    .await;
    stack.mail.wait_for(2, Duration::from_secs(15)).await;
    // The message is counted when it is acknowledged, just after its mails went out.
    let mut metrics = get("/metrics").await.1;
    for _ in 0..50 {
        if metrics.contains("connecx_messages_handled_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = get("/metrics").await.1;
    }
    assert!(
        metrics.contains("connecx_messages_handled_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("connecx_external_call_seconds") && metrics.contains("system=\"smtp\""),
        "SMTP calls are measured: {metrics}"
    );
    assert!(metrics.contains("queue=\"notifier\""), "{metrics}");
}

#[tokio::test]
async fn two_replicas_given_every_result_three_times_mail_each_recipient_once() {
    let stack = start_notifier().await;
    let mut settings = common::settings(&stack.db, &stack.broker, &stack.mail);
    settings.health.port = None;
    let second = notifier::Application::build(settings).await.unwrap();
    let token = stack.stop.clone();
    tokio::spawn(async move {
        second
            .run_until_stopped(async move { token.cancelled().await })
            .await
            .unwrap()
    });

    // 20 granted visits, each result published three times (a redelivery, a republish after a
    // lost confirm): the copies land on both replicas at once.
    let results: Vec<Envelope> = (0..20)
        .map(|n| {
            visitor_result(
                Uuid::new_v4(),
                1,
                Event::VisitorAccessGranted,
                Some(&format!("{n:06}")),
            )
        })
        .collect();
    for _ in 0..3 {
        for result in &results {
            publish(&stack, result).await;
        }
    }
    stack.mail.wait_for(40, Duration::from_secs(30)).await;
    // Any copy mailed twice would arrive within this pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = stack.mail.mails();
    assert_eq!(
        mails.len(),
        40,
        "one mail to the resident and one to the visitor per result, got {}",
        mails.len()
    );
    for result in &results {
        let pin = result_pin(result);
        for to in [RESIDENT, VISITOR] {
            assert_eq!(
                mails
                    .iter()
                    .filter(|m| m.is_to(to) && m.text_body.contains(&pin))
                    .count(),
                1,
                "{to} gets PIN {pin} once"
            );
        }
    }
}

fn result_pin(envelope: &Envelope) -> String {
    match &envelope.event {
        Event::VisitorAccessGranted(r) => r.pin.clone().unwrap(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_visitor_with_the_residents_address_gets_both_mails() {
    let stack = start_notifier().await;
    let mut booking = visitor_booking();
    booking.visitor.email = booking.resident.email.clone();
    let shared = booking.resident.email.clone();
    let envelope = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorAccessGranted(VisitorAccessResult {
            booking,
            pin: Some("424242".into()),
            failure: None,
        }),
    );
    publish(&stack, &envelope).await;
    let mails = stack.mail.wait_for(2, Duration::from_secs(15)).await;
    assert!(mails.iter().all(|m| m.is_to(&shared)));
    assert!(
        mails
            .iter()
            .any(|m| m.attachment_of_type("text/calendar").is_some()),
        "the visitor's invite arrived too"
    );
    // Redelivered: still two, not four.
    publish(&stack, &envelope).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.mail.mails().len(), 2);
}

#[tokio::test]
async fn an_earlier_result_of_the_same_version_arriving_late_mails_nobody() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    let now = chrono::Utc::now();
    let mut granted = Envelope::new(
        booking,
        1,
        Event::FacilityAccessGranted(facility_result(DoubleBookingPolicy::Auto, None, None)),
    );
    granted.occurred_at = now;
    let mut deferred = Envelope::new(
        booking,
        1,
        Event::FacilityAccessDeferred(facility_result(
            DoubleBookingPolicy::Auto,
            Some(Uuid::new_v4()),
            None,
        )),
    );
    deferred.occurred_at = now - chrono::Duration::seconds(30);
    publish(&stack, &granted).await;
    let first = stack.mail.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_grant = stack.mail.mails().len();
    assert!(after_grant >= first.len());
    publish(&stack, &deferred).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = stack.mail.mails();
    assert_eq!(
        mails.len(),
        after_grant,
        "the late `deferred` mailed: {:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_result_every_recipient_refuses_tells_the_manager_who_was_not_reached() {
    let stack = start_notifier().await;
    stack.mail.reject_recipient(RESIDENT);
    stack.mail.reject_recipient(VISITOR);
    let booking = Uuid::new_v4();
    publish(
        &stack,
        &visitor_result(booking, 1, Event::VisitorAccessGranted, Some("313131")),
    )
    .await;
    let told = stack
        .mail
        .wait_for_mail_to(MANAGER, Duration::from_secs(15))
        .await
        .expect("the manager hears that nobody was reached");
    assert!(told.subject.contains("Undeliverable"), "{}", told.subject);
    assert!(told.text_body.contains(RESIDENT) && told.text_body.contains(VISITOR));
    assert!(told.text_body.contains(&booking.to_string()));
    assert!(!told.text_body.contains("313131"), "never the PIN");
}

#[tokio::test]
async fn an_event_the_notifier_is_not_for_is_a_dead_letter_not_dropped() {
    let stack = start_notifier().await;
    let event = visit(&[MANAGER]);
    let body = event.to_json();
    let id = event.event_id.to_string();
    platform::amqp::Publisher::new(&common::amqp(&stack.broker), "test")
        .publish(platform::amqp::Outgoing {
            exchange: "",
            routing_key: contracts::NOTIFIER_QUEUE.name,
            body: &body,
            message_id: Some(&id),
            headers: platform::amqp::Headers::default(),
        })
        .await
        .unwrap();
    let pool = stack.db.pool(notifier::SCHEMA).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT error_kind, error FROM dead_letters")
                .fetch_all(&pool)
                .await
                .unwrap();
        if let Some((kind, error)) = stored.first() {
            assert_eq!(kind, "permanent");
            assert!(error.contains("not for the notifier"), "{error}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
