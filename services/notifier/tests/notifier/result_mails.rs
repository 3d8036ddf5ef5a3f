//! Result events become the mails residents, visitors and managers expect, once each.

use contracts::{
    AccessFailure, DoubleBookingPolicy, Envelope, Event, FacilityAccessResult,
    RefusedFacilityRequest, VisitorAccessResult,
};
use testkit::mail_sink::ReceivedMail;
use uuid::Uuid;

use crate::support::{
    MANAGER, PATIENCE, RESIDENT, RESULTS, VISITOR, facility_booking, html_says, needing_a_manager,
    publish, says, start_notifier, visit, visitor_booking, visitor_result,
};

fn facility_result(
    policy: DoubleBookingPolicy,
    held_by: Option<Uuid>,
    failure: Option<AccessFailure>,
) -> FacilityAccessResult {
    let booking = facility_booking(policy);
    FacilityAccessResult {
        // The holder's window, when there is a holder: the same day, 07:00–08:30 local.
        held_by_window: held_by.map(|_| {
            let mut window = booking.window.clone();
            let day = window.local_starts_at.date();
            window.local_starts_at = day.and_hms_opt(7, 0, 0).unwrap();
            window.local_ends_at = day.and_hms_opt(8, 30, 0).unwrap();
            window
        }),
        booking,
        held_by,
        failure,
    }
}

/// A result of a new facility booking.
fn facility_outcome(
    make: fn(FacilityAccessResult) -> Event,
    policy: DoubleBookingPolicy,
    held_by: Option<Uuid>,
    failure: Option<AccessFailure>,
) -> Envelope {
    Envelope::new(
        Uuid::new_v4(),
        1,
        make(facility_result(policy, held_by, failure)),
    )
}

/// The `.ics` invite a mail carries, as text.
fn invite(mail: &ReceivedMail) -> String {
    let invite = mail
        .attachment_of_type("text/calendar")
        .expect("an .ics invite");
    String::from_utf8_lossy(&invite.content).into_owned()
}

#[tokio::test]
async fn a_granted_visit_mails_the_code_and_an_invite_to_resident_and_visitor_once() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    let granted = visitor_result(booking, 1, Event::VisitorAccessGranted, Some("048213"));
    publish(&stack, &granted).await;
    publish(&stack, &granted).await; // delivered twice

    let resident = stack.mail_to(RESIDENT).await;
    says(&resident, &["048213", "Bo Tan"]);
    let visitor = stack.mail_to(VISITOR).await;
    says(&visitor, &["048213"]);
    html_says(&visitor, &["048213"]);
    let ics = invite(&visitor);
    for line in [
        "METHOD:REQUEST",
        &format!("UID:{booking}@visits.connecx"),
        "SEQUENCE:1",
    ] {
        assert!(ics.contains(line), "{line} missing:\n{ics}");
    }

    // Both deliveries are done with: whatever they mailed is in the sink.
    stack.wait_until_handled(RESULTS, 2).await;
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
    let results = [
        visitor_result(booking, 1, Event::VisitorAccessGranted, Some("111111")),
        visitor_result(booking, 2, Event::VisitorAccessUpdated, Some("111111")),
        visitor_result(booking, 3, Event::VisitorAccessRevoked, None),
    ];
    for (n, result) in results.iter().enumerate() {
        publish(&stack, result).await;
        stack.mail.wait_for(2 * (n + 1), PATIENCE).await;
    }
    assert_eq!(stack.mail.mails().len(), 6);

    let to_visitor = stack.mail.mails_to(VISITOR);
    let ics: Vec<String> = to_visitor.iter().map(invite).collect();
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
    let cancellation = &stack.mail.mails_to(RESIDENT)[2];
    says(cancellation, &["is cancelled"]);
    assert!(
        !cancellation.text_body.contains("111111"),
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
    stack.mail_to(RESIDENT).await;
    publish(
        &stack,
        &visitor_result(booking, 1, Event::VisitorAccessGranted, Some("222222")),
    )
    .await;
    stack.wait_until_handled(RESULTS, 2).await;
    let mails = stack.mail.mails();
    assert_eq!(mails.len(), 1);
    assert!(stack.mail.mails_to(VISITOR).is_empty());
    assert!(mails.iter().all(|m| !m.text_body.contains("222222")));
}

#[tokio::test]
async fn a_failed_visit_tells_the_resident_and_the_manager_when_a_person_must_act() {
    let stack = start_notifier().await;
    let mut failed = visitor_result(Uuid::new_v4(), 1, Event::VisitorAccessFailed, None);
    if let Event::VisitorAccessFailed(r) = &mut failed.event {
        r.failure = Some(needing_a_manager(
            "visitee_has_no_access_profile",
            "Ana Lee has no access profile in iPassan",
        ));
    }
    publish(&stack, &failed).await;
    says(&stack.mail_to(RESIDENT).await, &["no access profile"]);
    let manager = stack.mail_to(MANAGER).await;
    says(&manager, &["visitee_has_no_access_profile"]);
    assert!(manager.subject.contains("Action needed"));
    stack.wait_until_handled(RESULTS, 1).await;
    assert!(
        stack.mail.mails_to(VISITOR).is_empty(),
        "the visitor gets no code and no mail"
    );
}

#[tokio::test]
async fn a_double_booking_tells_the_manager_whether_to_act() {
    let stack = start_notifier().await;
    let holder = Uuid::new_v4();
    let deferred =
        |policy| facility_outcome(Event::FacilityAccessDeferred, policy, Some(holder), None);
    let auto = deferred(DoubleBookingPolicy::Auto);
    publish(&stack, &auto).await;
    let manager = stack.mail_to(MANAGER).await;
    assert!(
        manager.subject.contains("Double booking"),
        "{}",
        manager.subject
    );
    let Event::FacilityAccessDeferred(result) = &auto.event else {
        unreachable!()
    };
    // Both bookings' dates and hours: the holder's 07:00–08:30 and the new one's.
    let new_hours = format!("{}–", result.booking.window.local_starts_at.format("%H:%M"));
    says(
        &manager,
        &[
            "No action is needed",
            &holder.to_string(),
            &auto.booking_id.to_string(),
            "07:00–08:30",
            &new_hours,
        ],
    );
    html_says(&manager, &["07:00–08:30"]);
    says(&stack.mail_to(RESIDENT).await, &["automatically"]);

    let manual = deferred(DoubleBookingPolicy::Manual);
    publish(&stack, &manual).await;
    let mails = stack.mail.wait_for(4, PATIENCE).await;
    let manual_mail = mails
        .iter()
        .find(|m| m.is_to(MANAGER) && m.text_body.contains(&manual.booking_id.to_string()))
        .expect("second manager mail");
    says(manual_mail, &["Action needed"]);
}

#[tokio::test]
async fn a_salto_refusal_that_needs_a_person_reaches_the_manager_with_the_ids() {
    let stack = start_notifier().await;
    let failed = facility_outcome(
        Event::FacilityAccessFailed,
        DoubleBookingPolicy::Auto,
        None,
        Some(needing_a_manager(
            "salto_not_found",
            "Salto answered code 11: zone GAMES-ROOM not found",
        )),
    );
    publish(&stack, &failed).await;
    says(
        &stack.mail_to(MANAGER).await,
        &[
            "code 11",
            "501-56",
            "GAMES-ROOM",
            "apt-501",
            "Games room",
            "What to do",
        ],
    );
    let granted = facility_outcome(
        Event::FacilityAccessGranted,
        DoubleBookingPolicy::Auto,
        None,
        None,
    );
    publish(&stack, &granted).await;
    stack.wait_until_handled(RESULTS, 2).await;
    let mails = stack.mail.mails();
    assert_eq!(mails.len(), 3, "the booker twice, the manager once");
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
    let booking = facility_booking(DoubleBookingPolicy::Auto);
    let refused = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::FacilityRequestRefused(RefusedFacilityRequest {
            building: booking.building,
            window: booking.window,
            facility_id: "games-room".into(),
            facility_name: "Games room".into(),
            apartment_id: "apt-501".into(),
            booked_by: booking.booked_by,
            failure: needing_a_manager(
                "facility_access_control_id_missing",
                "facility games-room has no Access Control Facility ID",
            ),
        }),
    );
    publish(&stack, &refused).await;
    says(
        &stack.mail_to(MANAGER).await,
        &[
            "Games room",
            "apt-501",
            "Ana Lee",
            "facility_access_control_id_missing",
            "PUT /v1/facilities/games-room",
            "access_control_facility_id",
            &refused.booking_id.to_string(),
        ],
    );
    // The booker had the refusal in the API's answer: no mail to them.
    stack.wait_until_handled(RESULTS, 1).await;
    assert!(stack.mail.mails_to(RESIDENT).is_empty());
}

#[tokio::test]
async fn the_health_port_says_ready_and_counts_handled_messages() {
    let stack = start_notifier().await;
    assert_eq!(stack.get("/healthz").await.0, 200);
    // Ready once both consumers are attached (the stack waits for it).
    assert_eq!(stack.get("/readyz").await.0, 200);
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
    stack.mail.wait_for(2, PATIENCE).await;
    // The message is counted when it is acknowledged, just after its mails went out.
    stack.wait_until_handled(RESULTS, 1).await;
    let metrics = stack.get("/metrics").await.1;
    assert!(
        metrics.contains("connecx_external_call_seconds") && metrics.contains("system=\"smtp\""),
        "SMTP calls are measured: {metrics}"
    );
    assert!(
        metrics.contains("connecx_messages_handled_total{queue=\"notifier\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_replicas_given_every_result_three_times_mail_each_recipient_once() {
    let stack = start_notifier().await;
    let mut settings = crate::support::settings(&stack.db, &stack.broker, &stack.mail);
    settings.shared.health.port = None;
    crate::support::run(
        &stack,
        notifier::Application::build(settings).await.unwrap(),
    );

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
    // Every copy is done with (both replicas count into the one process's metrics): a copy
    // mailed twice would be in the sink by now.
    stack.wait_until_handled(RESULTS, 60).await;
    let mails = stack.mail.mails();
    assert_eq!(
        mails.len(),
        40,
        "one mail to the resident and one to the visitor per result, got {}",
        mails.len()
    );
    for result in &results {
        let Event::VisitorAccessGranted(VisitorAccessResult { pin: Some(pin), .. }) = &result.event
        else {
            unreachable!()
        };
        for to in [RESIDENT, VISITOR] {
            assert_eq!(
                mails
                    .iter()
                    .filter(|m| m.is_to(to) && m.text_body.contains(pin.as_str()))
                    .count(),
                1,
                "{to} gets PIN {pin} once"
            );
        }
    }
}

#[tokio::test]
async fn a_visitor_with_the_residents_address_gets_both_mails() {
    let stack = start_notifier().await;
    let mut booking = visitor_booking(&[MANAGER]);
    booking.visitor.email = booking.resident.email.clone();
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
    let mails = stack.mail.wait_for(2, PATIENCE).await;
    assert!(mails.iter().all(|m| m.is_to(RESIDENT)));
    assert!(
        mails
            .iter()
            .any(|m| m.attachment_of_type("text/calendar").is_some()),
        "the visitor's invite arrived too"
    );
    // Redelivered: still two, not four.
    publish(&stack, &envelope).await;
    stack.wait_until_handled(RESULTS, 2).await;
    assert_eq!(stack.mail.mails().len(), 2);
}

#[tokio::test]
async fn an_earlier_result_of_the_same_version_arriving_late_mails_nobody() {
    let stack = start_notifier().await;
    let booking = Uuid::new_v4();
    let now = chrono::Utc::now();
    let of_this_booking = |make: fn(FacilityAccessResult) -> Event,
                           held_by: Option<Uuid>,
                           occurred_at: chrono::DateTime<chrono::Utc>| {
        let mut envelope = facility_outcome(make, DoubleBookingPolicy::Auto, held_by, None);
        envelope.booking_id = booking;
        envelope.occurred_at = occurred_at;
        envelope
    };
    let granted = of_this_booking(Event::FacilityAccessGranted, None, now);
    let deferred = of_this_booking(
        Event::FacilityAccessDeferred,
        Some(Uuid::new_v4()),
        now - chrono::Duration::seconds(30),
    );
    publish(&stack, &granted).await;
    stack.wait_until_handled(RESULTS, 1).await;
    let after_grant = stack.mail.mails().len();
    assert_eq!(after_grant, 1, "the booker hears of the grant");
    publish(&stack, &deferred).await;
    stack.wait_until_handled(RESULTS, 2).await;
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
    let told = stack.mail_to(MANAGER).await;
    assert!(told.subject.contains("Undeliverable"), "{}", told.subject);
    says(&told, &[RESIDENT, VISITOR, &booking.to_string()]);
    assert!(!told.text_body.contains("313131"), "never the PIN");
}

#[tokio::test]
async fn an_event_the_notifier_is_not_for_is_a_dead_letter_not_dropped() {
    let stack = start_notifier().await;
    let event = visit(&[MANAGER]);
    let body = event.to_json();
    let id = event.event_id.to_string();
    platform::amqp::Publisher::new(&crate::support::amqp(&stack.broker), "test")
        .publish(platform::amqp::Outgoing {
            exchange: "",
            routing_key: RESULTS,
            body: &body,
            message_id: Some(&id),
            headers: platform::amqp::Headers::default(),
        })
        .await
        .unwrap();
    let stored = stack.wait_for_dead_letters(1).await;
    assert_eq!(stored[0].1, "permanent");
    let error: String = sqlx::query_scalar("SELECT error FROM dead_letters")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert!(error.contains("not for the notifier"), "{error}");
}
