//! The results in hand are mailed in batches (docs/architecture.md, "Batches"): every
//! recipient still gets each mail once, and a result none of whose recipients accept it gets
//! its fallback without holding up the others of its batch.

use contracts::{Envelope, Event, VisitorAccessResult};
use testkit::mail_sink::ReceivedMail;
use uuid::Uuid;

use crate::support::{
    MANAGER, PATIENCE, RESIDENT, RESULTS, VISITOR, eventually, publish_all, start_notifier,
    visitor_booking, visitor_result,
};

/// The PIN a granted visit's result carries.
fn pin_of(result: &Envelope) -> &str {
    match &result.event {
        Event::VisitorAccessGranted(VisitorAccessResult { pin: Some(pin), .. }) => pin,
        other => panic!("not a granted visit: {other:?}"),
    }
}

/// Each granted visit of `results` mailed its PIN once to the resident and once to the visitor.
fn each_pin_mailed_once(mails: &[ReceivedMail], results: &[Envelope]) {
    for result in results {
        let pin = pin_of(result);
        for to in [RESIDENT, VISITOR] {
            let copies = mails
                .iter()
                .filter(|m| m.is_to(to) && m.text_body.contains(pin))
                .count();
            assert_eq!(copies, 1, "{to} gets PIN {pin} once");
        }
    }
}

#[tokio::test]
async fn a_burst_of_results_is_mailed_in_batches_each_mail_once() {
    let stack = start_notifier().await;
    let results: Vec<Envelope> = (0..40)
        .map(|n| {
            visitor_result(
                Uuid::new_v4(),
                1,
                Event::VisitorAccessGranted,
                Some(&format!("{:06}", 500_000 + n)),
            )
        })
        .collect();
    publish_all(&stack, &results).await;

    stack.wait_until_handled(RESULTS, 40).await;
    let mails = stack.mail.mails();
    assert_eq!(
        mails.len(),
        80,
        "a mail to the resident and one to the visitor per result"
    );
    each_pin_mailed_once(&mails, &results);
    let batches = stack.counter("connecx_batches_total", RESULTS).await;
    let batched = stack
        .counter("connecx_batched_messages_total", RESULTS)
        .await;
    assert_eq!(batched, 40, "every result went through a batch");
    assert!(
        batches < batched,
        "results were gathered: {batches} batches for {batched} results"
    );
    // A batch's 64 mails wait for the notifier's eight connections rather than each opening
    // one, and the connections carry mail after mail.
    assert!(
        stack.mail.most_sessions_at_once() <= 8,
        "{} SMTP sessions at once",
        stack.mail.most_sessions_at_once()
    );
    assert!(
        stack.mail.sessions_begun() <= 8,
        "{} SMTP sessions for 80 mails",
        stack.mail.sessions_begun()
    );
}

#[tokio::test]
async fn a_result_nobody_accepts_gets_its_fallback_and_its_batch_goes_on() {
    let stack = start_notifier().await;
    let refusing = "nobody@refusing.example";
    stack.mail.reject_recipient(refusing);
    let mut results: Vec<Envelope> = (0..12)
        .map(|n| {
            visitor_result(
                Uuid::new_v4(),
                1,
                Event::VisitorAccessGranted,
                Some(&format!("{:06}", 600_000 + n)),
            )
        })
        .collect();
    // Among them, a visit whose resident and visitor both refuse every mail.
    let mut unreachable = visitor_booking(&[MANAGER]);
    unreachable.resident.email = refusing.into();
    unreachable.visitor.email = refusing.into();
    let lost = Envelope::new(
        Uuid::new_v4(),
        1,
        Event::VisitorAccessGranted(VisitorAccessResult {
            booking: unreachable,
            pin: Some("777777".into()),
            failure: None,
        }),
    );
    results.insert(6, lost.clone());
    publish_all(&stack, &results).await;

    stack.wait_until_handled(RESULTS, 13).await;
    let told = eventually("the manager told of the lost mails", PATIENCE, || async {
        stack
            .mail
            .mails_to(MANAGER)
            .into_iter()
            .find(|m| m.subject.contains("Undeliverable"))
    })
    .await;
    assert!(told.text_body.contains(&lost.booking_id.to_string()));
    assert!(!told.text_body.contains("777777"), "never the PIN");
    let reached: Vec<Envelope> = results
        .into_iter()
        .filter(|r| r.booking_id != lost.booking_id)
        .collect();
    each_pin_mailed_once(&stack.mail.mails(), &reached);
    assert!(stack.stored_dead_letters().await.is_empty());
}
