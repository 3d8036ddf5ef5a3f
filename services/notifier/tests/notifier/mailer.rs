//! The SMTP client against a real SMTP server (the test sink): mails go out over reused
//! connections, a recipient refused for good is permanent, a server refusing for now is
//! transient, and the client recovers from both.

use std::time::Duration;

use notifier::mailer::{Mail, MailError, Mailer};
use testkit::mail_sink::MailSink;

use crate::support::smtp;

fn mailer(sink: &MailSink) -> Mailer {
    Mailer::new(&smtp(sink.host(), sink.port(), 5)).unwrap()
}

/// Sends a mail that must be accepted.
async fn send(mailer: &Mailer, to: &str, subject: &str) {
    mailer.send(&mail(to, subject)).await.unwrap();
}

fn mail(to: &str, subject: &str) -> Mail {
    Mail {
        kind: "test",
        to: to.into(),
        subject: subject.into(),
        text: format!("{subject}\n"),
        html: format!("<p>{subject}</p>"),
        calendar: None,
    }
}

#[tokio::test]
async fn mails_go_out_one_after_another_over_a_kept_connection() {
    let sink = MailSink::start();
    let mailer = mailer(&sink);
    for i in 0..10 {
        send(&mailer, "ana@residents.test", &format!("mail {i}")).await;
    }
    let mails = sink.wait_for(10, Duration::from_secs(5)).await;
    let subjects: Vec<_> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        (0..10).map(|i| format!("mail {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_and_the_next_mail_still_goes() {
    let sink = MailSink::start();
    let mailer = mailer(&sink);
    send(&mailer, "ana@residents.test", "first").await;
    sink.reject_recipient("gone@visitors.test");
    let refused = mailer.send(&mail("gone@visitors.test", "lost")).await;
    assert!(
        matches!(refused, Err(MailError::Permanent(_))),
        "{refused:?}"
    );
    send(&mailer, "ana@residents.test", "after").await;
    let mails = sink.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].subject, "after");
}

#[tokio::test]
async fn a_server_refusing_for_now_is_transient_and_mail_goes_once_it_accepts_again() {
    let sink = MailSink::start();
    let mailer = mailer(&sink);
    send(&mailer, "ana@residents.test", "before").await;
    sink.set_refusing(true);
    let refused = mailer.send(&mail("ana@residents.test", "during")).await;
    assert!(
        matches!(refused, Err(MailError::Transient(_))),
        "{refused:?}"
    );
    sink.set_refusing(false);
    send(&mailer, "ana@residents.test", "after").await;
    let subjects: Vec<_> = sink
        .wait_for(2, Duration::from_secs(5))
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[tokio::test]
async fn no_server_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = Mailer::new(&smtp("127.0.0.1".into(), port, 2)).unwrap();
    let failed = mailer.send(&mail("ana@residents.test", "nobody")).await;
    assert!(matches!(failed, Err(MailError::Transient(_))), "{failed:?}");
}
