//! A real SMTP server that runs inside a test (and behind the `mail-sink` binary for local runs).
//!
//! The notifier talks SMTP through lettre; to test it the way it runs, tests point it at a
//! [`MailSink`] on a random local port and assert on what a person would receive: envelope,
//! subject, text and HTML bodies, the `.ics` attachment. The sink also plays the failures the
//! notifier must classify (docs/architecture.md, "Mails"): [`MailSink::set_refusing`] answers `451` to every
//! transaction ("SMTP down", transient) and [`MailSink::reject_recipient`] answers `550` for one
//! address (permanent for that recipient).
//!
//! The SMTP protocol is `mailin-embedded` (blocking, one thread per session); MIME decoding is
//! `mail-parser`. mailin-embedded has no way to stop its accept loop, so a sink's listener and
//! threads live until the test process ends — with nextest that is the end of the test.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use mailin_embedded::{Handler, Response, Server, response};
use tokio::sync::watch;

/// Concurrent SMTP sessions a sink serves. lettre's pool keeps up to 10 idle connections open by
/// default and each one holds a session thread, so this must stay above that.
const SESSION_THREADS: u32 = 16;

/// One message the sink accepted, decoded for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub received_at: DateTime<Utc>,
    /// `MAIL FROM` of the SMTP envelope.
    pub envelope_from: String,
    /// Every accepted `RCPT TO` of the envelope, so Bcc recipients appear here too.
    pub recipients: Vec<String>,
    /// Decoded `Subject`; empty when the header is missing.
    pub subject: String,
    /// The `text/plain` body parts, joined; empty when the mail has none. Line ends are `\n` and
    /// trailing ones are dropped (the wire form is in `raw`).
    pub text_body: String,
    /// The first `text/html` body part, if the mail has one; line ends as in `text_body`.
    pub html_body: Option<String>,
    pub attachments: Vec<MailAttachment>,
    /// Top-level headers in order, as `(name, value)`; values are unfolded but not decoded.
    pub headers: Vec<(String, String)>,
    /// The message exactly as received after `DATA` (dot-unstuffed, CRLF line ends).
    pub raw: Vec<u8>,
}

/// A MIME part the mail carries as an attachment, with its transfer encoding undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAttachment {
    pub filename: Option<String>,
    /// `type/subtype`, without parameters, e.g. `text/calendar`.
    pub content_type: String,
    pub content: Vec<u8>,
}

impl ReceivedMail {
    /// The first top-level header with this name (case-insensitive), raw but unfolded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether `address` was an envelope recipient (compared case-insensitively).
    pub fn is_to(&self, address: &str) -> bool {
        self.recipients
            .iter()
            .any(|recipient| recipient.eq_ignore_ascii_case(address))
    }

    pub fn attachment(&self, filename: &str) -> Option<&MailAttachment> {
        self.attachments
            .iter()
            .find(|attachment| attachment.filename.as_deref() == Some(filename))
    }

    /// The first attachment of this `type/subtype` (case-insensitive), named or not — an `.ics`
    /// invite may travel as a named attachment or as an unnamed `text/calendar` alternative.
    pub fn attachment_of_type(&self, content_type: &str) -> Option<&MailAttachment> {
        self.attachments
            .iter()
            .find(|attachment| attachment.content_type.eq_ignore_ascii_case(content_type))
    }

    fn decode(envelope_from: String, recipients: Vec<String>, raw: Vec<u8>) -> Self {
        let mut mail = ReceivedMail {
            received_at: Utc::now(),
            envelope_from,
            recipients,
            subject: String::new(),
            text_body: String::new(),
            html_body: None,
            attachments: Vec::new(),
            headers: Vec::new(),
            raw: Vec::new(),
        };
        // A message mail-parser cannot read is still kept, raw, so a test can see what came in.
        if let Some(message) = MessageParser::default().parse(&raw) {
            mail.subject = message.subject().unwrap_or_default().to_owned();
            mail.headers = message
                .headers_raw()
                .map(|(name, value)| (name.to_owned(), unfold(value)))
                .collect();
            // mail-parser offers an HTML-to-text rendering as the text body of an HTML-only mail
            // (and the reverse); tests must see only what the sender actually wrote.
            mail.text_body = message
                .text_bodies()
                .filter(|part| part.is_text() && !part.is_text_html())
                .filter_map(|part| part.text_contents())
                .map(as_written)
                .collect::<Vec<_>>()
                .join("\n");
            mail.html_body = message
                .html_bodies()
                .find(|part| part.is_text_html())
                .and_then(|part| part.text_contents())
                .map(as_written);
            mail.attachments = message
                .attachments()
                .map(|part| MailAttachment {
                    filename: part.attachment_name().map(str::to_owned),
                    content_type: part.content_type().map_or_else(
                        || "application/octet-stream".to_owned(),
                        |ct| match ct.subtype() {
                            Some(subtype) => format!("{}/{subtype}", ct.ctype()),
                            None => ct.ctype().to_owned(),
                        },
                    ),
                    content: part.contents().to_vec(),
                })
                .collect();
        }
        mail.raw = raw;
        mail
    }
}

/// SMTP carries text with CRLF line ends and a line end before the closing dot or boundary;
/// templates are written with `\n`. Tests compare against what the sender wrote.
fn as_written(body: &str) -> String {
    body.replace("\r\n", "\n").trim_end_matches('\n').to_owned()
}

fn unfold(raw_value: &str) -> String {
    raw_value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

/// An SMTP server on 127.0.0.1 that keeps every message it accepts. Cheap to clone; clones share
/// the mailbox and the failure switches.
#[derive(Clone)]
pub struct MailSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    /// The mailbox itself; a watch channel so waiting tests wake on each arrival.
    mails: watch::Sender<Vec<ReceivedMail>>,
    refusing: AtomicBool,
    /// Lower-cased addresses answered with 550.
    rejected_recipients: Mutex<HashSet<String>>,
    /// SMTP sessions (a client's greeting on a connection): open now, the most open at once,
    /// and every one begun.
    sessions_open: AtomicUsize,
    most_sessions_at_once: AtomicUsize,
    sessions_begun: AtomicUsize,
}

impl Shared {
    fn refusing(&self) -> bool {
        self.refusing.load(Ordering::SeqCst)
    }

    fn rejected_recipients(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set is never left half-updated, so a panic elsewhere does not invalidate it.
        self.rejected_recipients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl MailSink {
    /// Starts a sink on 127.0.0.1 with a port the OS picks.
    ///
    /// # Panics
    /// When no local port can be bound — a broken test environment, not a test outcome.
    pub fn start() -> MailSink {
        match Self::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(sink) => sink,
            Err(error) => panic!("mail sink cannot listen on 127.0.0.1: {error}"),
        }
    }

    /// Starts a sink on 127.0.0.1 that serves up to `sessions` SMTP sessions at once, for runs
    /// with several notifier replicas: each pools up to 8 connections and keeps them open while
    /// idle, so two replicas alone fill [`MailSink::start`]'s 16 and a third connection would
    /// wait for one to be dropped.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub fn start_with_sessions(sessions: u32) -> MailSink {
        match Self::bind_with_sessions((Ipv4Addr::LOCALHOST, 0), sessions) {
            Ok(sink) => sink,
            Err(error) => panic!("mail sink cannot listen on 127.0.0.1: {error}"),
        }
    }

    /// Starts a sink on the given address (the `mail-sink` binary uses a fixed port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<MailSink> {
        Self::bind_with_sessions(addr, SESSION_THREADS)
    }

    fn bind_with_sessions(addr: impl ToSocketAddrs, sessions: u32) -> io::Result<MailSink> {
        // Binding here rather than inside mailin-embedded is what lets us learn the port.
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mails: watch::Sender::new(Vec::new()),
            refusing: AtomicBool::new(false),
            rejected_recipients: Mutex::new(HashSet::new()),
            sessions_open: AtomicUsize::new(0),
            most_sessions_at_once: AtomicUsize::new(0),
            sessions_begun: AtomicUsize::new(0),
        });
        let mut server = Server::new(SinkSession::new(Arc::clone(&shared)));
        server
            .with_name("mail-sink.test")
            .with_num_threads(sessions)
            .with_tcp_listener(listener);
        thread::Builder::new()
            .name(format!("mail-sink-{}", addr.port()))
            .spawn(move || {
                if let Err(error) = server.serve() {
                    tracing::error!(%error, %addr, "mail sink stopped serving");
                }
            })?;
        Ok(MailSink { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every mail accepted so far, oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.mails.borrow().clone()
    }

    /// The mails accepted so far with `recipient` in the envelope, oldest first.
    pub fn mails_to(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.shared
            .mails
            .borrow()
            .iter()
            .filter(|mail| mail.is_to(recipient))
            .cloned()
            .collect()
    }

    /// Waits until at least `count` mails have arrived in total, or `timeout` passes, and returns
    /// all of them — fewer than `count` on timeout, so assert on the length.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut arrivals = self.shared.mails.subscribe();
        // Err means the timeout passed; the sender lives in `self.shared`, so it cannot close.
        let _ =
            tokio::time::timeout(timeout, arrivals.wait_for(|mails| mails.len() >= count)).await;
        self.mails()
    }

    /// Waits for the first mail with `recipient` in the envelope; `None` if none came in time.
    pub async fn wait_for_mail_to(
        &self,
        recipient: &str,
        timeout: Duration,
    ) -> Option<ReceivedMail> {
        let mut arrivals = self.shared.mails.subscribe();
        let _ = tokio::time::timeout(
            timeout,
            arrivals.wait_for(|mails| mails.iter().any(|mail| mail.is_to(recipient))),
        )
        .await;
        self.mails_to(recipient).into_iter().next()
    }

    /// While on, `MAIL`, `RCPT` and `DATA` are answered `451` (temporary failure), so nothing is
    /// accepted — the "SMTP down" a sender must retry. Connections, pooled ones included, stay up.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// From now on `RCPT TO:<address>` is answered `550` (mailbox unavailable), a permanent
    /// failure for that recipient. Compared case-insensitively.
    pub fn reject_recipient(&self, address: &str) {
        self.shared
            .rejected_recipients()
            .insert(address.to_ascii_lowercase());
    }

    /// Undoes [`MailSink::reject_recipient`].
    pub fn accept_recipient(&self, address: &str) {
        self.shared
            .rejected_recipients()
            .remove(&address.to_ascii_lowercase());
    }

    /// The most SMTP sessions (connections that greeted) that were open at once so far.
    pub fn most_sessions_at_once(&self) -> usize {
        self.shared.most_sessions_at_once.load(Ordering::SeqCst)
    }

    /// Every SMTP session begun so far: a client that reuses its connections begins few.
    pub fn sessions_begun(&self) -> usize {
        self.shared.sessions_begun.load(Ordering::SeqCst)
    }
}

/// The state of one SMTP session; mailin-embedded clones a fresh one per connection.
#[derive(Clone)]
struct SinkSession {
    shared: Arc<Shared>,
    /// Whether this connection greeted, and so is counted among the open sessions.
    greeted: bool,
    envelope_from: String,
    recipients: Vec<String>,
    data: Vec<u8>,
}

impl SinkSession {
    fn new(shared: Arc<Shared>) -> Self {
        SinkSession {
            shared,
            greeted: false,
            envelope_from: String::new(),
            recipients: Vec::new(),
            data: Vec::new(),
        }
    }
}

fn refused() -> Response {
    Response::custom(
        451,
        "4.3.0 Requested action aborted: the mail sink is refusing mail".to_owned(),
    )
}

impl Drop for SinkSession {
    fn drop(&mut self) {
        if self.greeted {
            self.shared.sessions_open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Handler for SinkSession {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if !self.greeted {
            self.greeted = true;
            self.shared.sessions_begun.fetch_add(1, Ordering::SeqCst);
            let open = self.shared.sessions_open.fetch_add(1, Ordering::SeqCst) + 1;
            self.shared
                .most_sessions_at_once
                .fetch_max(open, Ordering::SeqCst);
        }
        response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        if self.shared.refusing() {
            return refused();
        }
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self.shared.refusing() {
            return refused();
        }
        if self
            .shared
            .rejected_recipients()
            .contains(&to.to_ascii_lowercase())
        {
            return Response::custom(550, format!("5.1.1 <{to}>: mailbox unavailable"));
        }
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.shared.refusing() {
            return refused();
        }
        self.envelope_from = from.to_owned();
        self.recipients = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    // Never refuses: mailin 0.6 stays in the DATA state after an error reply here, so the
    // client's next command would be swallowed as message text. A mail whose DATA started
    // before `set_refusing(true)` is therefore still accepted.
    fn data_end(&mut self) -> Response {
        let mail = ReceivedMail::decode(
            std::mem::take(&mut self.envelope_from),
            std::mem::take(&mut self.recipients),
            std::mem::take(&mut self.data),
        );
        self.shared.mails.send_modify(|mails| mails.push(mail));
        response::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::header::ContentType;
    use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    const WAIT: Duration = Duration::from_secs(5);

    fn transport_to(sink: &MailSink) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(sink.host())
            .port(sink.port())
            .timeout(Some(WAIT))
            .build()
    }

    fn mailbox(address: &str) -> Mailbox {
        address.parse().unwrap()
    }

    fn plain_mail(to: &[&str], subject: &str) -> Message {
        let mut builder = Message::builder()
            .from(mailbox("notifier@connecx.test"))
            .subject(subject);
        for address in to {
            builder = builder.to(mailbox(address));
        }
        builder.body(format!("Body of {subject}")).unwrap()
    }

    const INVITE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:visit-42@connecx.test\r\nSUMMARY:Besuch\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn visitor_mail() -> Message {
        Message::builder()
            .from("connecX <notifier@connecx.test>".parse().unwrap())
            .to(mailbox("visitor@example.com"))
            .message_id(None)
            .bcc(mailbox("audit@connecx.test"))
            .subject("Ihr Zugang für Büro 3 – PIN 4711")
            .multipart(
                MultiPart::mixed()
                    .multipart(MultiPart::alternative_plain_html(
                        "Ihre PIN: 4711\nGültig 09:00–17:00".to_owned(),
                        "<p>Ihre PIN: <b>4711</b></p>".to_owned(),
                    ))
                    .singlepart(Attachment::new("invite.ics".to_owned()).body(
                        INVITE.to_owned(),
                        ContentType::parse("text/calendar; method=REQUEST; charset=utf-8").unwrap(),
                    )),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn a_mail_sent_over_smtp_arrives_with_envelope_bodies_and_attachment() {
        let sink = MailSink::start();

        transport_to(&sink).send(visitor_mail()).await.unwrap();

        let mails = sink.wait_for(1, WAIT).await;
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.envelope_from, "notifier@connecx.test");
        assert_eq!(
            mail.recipients,
            ["visitor@example.com", "audit@connecx.test"]
        );
        assert_eq!(mail.subject, "Ihr Zugang für Büro 3 – PIN 4711");
        assert!(
            mail.text_body.contains("Ihre PIN: 4711"),
            "{}",
            mail.text_body
        );
        assert!(mail.text_body.contains("Gültig 09:00–17:00"));
        assert_eq!(
            mail.html_body.as_deref(),
            Some("<p>Ihre PIN: <b>4711</b></p>")
        );
        let invite = mail.attachment("invite.ics").unwrap();
        assert_eq!(invite.content_type, "text/calendar");
        assert_eq!(mail.attachment_of_type("TEXT/CALENDAR"), Some(invite));
        assert_eq!(invite.content, INVITE.as_bytes());
        assert_eq!(mail.attachments.len(), 1);
        assert_eq!(
            mail.header("to"),
            Some("visitor@example.com"),
            "{:?}",
            mail.headers
        );
        assert!(mail.header("Message-ID").is_some());
        assert!(mail.header("Bcc").is_none());
        assert!(String::from_utf8_lossy(&mail.raw).contains("MIME-Version: 1.0"));
    }

    #[tokio::test]
    async fn mails_can_be_picked_out_by_recipient() {
        let sink = MailSink::start();
        let transport = transport_to(&sink);

        transport
            .send(plain_mail(&["manager@example.com"], "first"))
            .await
            .unwrap();
        transport
            .send(plain_mail(&["visitor@example.com"], "second"))
            .await
            .unwrap();
        transport
            .send(plain_mail(&["Manager@Example.com"], "third"))
            .await
            .unwrap();

        assert_eq!(sink.wait_for(3, WAIT).await.len(), 3);
        let to_manager: Vec<_> = sink
            .mails_to("manager@example.com")
            .into_iter()
            .map(|mail| mail.subject)
            .collect();
        assert_eq!(to_manager, ["first", "third"]);
        let to_visitor = sink.wait_for_mail_to("visitor@example.com", WAIT).await;
        assert_eq!(
            to_visitor.map(|mail| mail.text_body).as_deref(),
            Some("Body of second")
        );
    }

    #[tokio::test]
    async fn waiting_for_a_mail_wakes_when_it_is_sent_later() {
        let sink = MailSink::start();
        let transport = transport_to(&sink);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            transport
                .send(plain_mail(&["late@example.com"], "late"))
                .await
        });

        let mail = sink.wait_for_mail_to("late@example.com", WAIT).await;

        assert_eq!(mail.map(|mail| mail.subject).as_deref(), Some("late"));
        sender.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn waiting_gives_up_after_the_timeout() {
        let sink = MailSink::start();

        let mail = sink
            .wait_for_mail_to("nobody@example.com", Duration::from_millis(100))
            .await;
        let mails = sink.wait_for(1, Duration::from_millis(100)).await;

        assert!(mail.is_none());
        assert!(mails.is_empty());
    }

    #[tokio::test]
    async fn a_refusing_sink_answers_451_and_accepts_again_when_switched_back() {
        let sink = MailSink::start();
        let transport = transport_to(&sink);
        sink.set_refusing(true);

        let error = transport
            .send(plain_mail(&["visitor@example.com"], "during outage"))
            .await
            .unwrap_err();

        assert!(error.is_transient(), "{error}");
        assert_eq!(error.status().map(u16::from), Some(451));
        assert!(sink.mails().is_empty());

        sink.set_refusing(false);
        transport
            .send(plain_mail(&["visitor@example.com"], "after outage"))
            .await
            .unwrap();
        let mails = sink.wait_for(1, WAIT).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].subject, "after outage");
    }

    #[tokio::test]
    async fn a_rejected_recipient_gets_550_and_nothing_is_delivered_to_anyone_in_that_mail() {
        let sink = MailSink::start();
        let transport = transport_to(&sink);
        sink.reject_recipient("Gone@Example.com");

        let error = transport
            .send(plain_mail(
                &["manager@example.com", "gone@example.com"],
                "to both",
            ))
            .await
            .unwrap_err();

        assert!(error.is_permanent(), "{error}");
        assert_eq!(error.status().map(u16::from), Some(550));
        transport
            .send(plain_mail(&["manager@example.com"], "to the manager alone"))
            .await
            .unwrap();
        let mails = sink.wait_for(1, WAIT).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].recipients, ["manager@example.com"]);

        sink.accept_recipient("gone@example.com");
        transport
            .send(plain_mail(&["gone@example.com"], "back again"))
            .await
            .unwrap();
        assert!(
            sink.wait_for_mail_to("gone@example.com", WAIT)
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_html_only_mail_has_no_text_body_and_a_plain_one_has_no_html() {
        let sink = MailSink::start();

        transport_to(&sink)
            .send(
                Message::builder()
                    .from(mailbox("notifier@connecx.test"))
                    .to(mailbox("ops@connecx.test"))
                    .subject("Dead letter 7f3a")
                    .singlepart(SinglePart::html("<p>only html</p>".to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        transport_to(&sink)
            .send(plain_mail(&["ops@connecx.test"], "plain"))
            .await
            .unwrap();

        let mails = sink.wait_for(2, WAIT).await;
        assert_eq!(mails[0].html_body.as_deref(), Some("<p>only html</p>"));
        assert_eq!(mails[0].text_body, "");
        assert_eq!(mails[1].text_body, "Body of plain");
        assert_eq!(mails[1].html_body, None);
        assert!(mails[1].attachments.is_empty());
    }

    #[tokio::test]
    async fn a_calendar_alternative_counts_as_an_attachment_not_as_text() {
        let sink = MailSink::start();
        let invite_as_alternative = Message::builder()
            .from(mailbox("notifier@connecx.test"))
            .to(mailbox("visitor@example.com"))
            .subject("Einladung")
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain("Ihre PIN: 4711".to_owned()))
                    .singlepart(SinglePart::html("<p>Ihre PIN: 4711</p>".to_owned()))
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::parse("text/calendar; method=REQUEST").unwrap())
                            .body(INVITE.to_owned()),
                    ),
            )
            .unwrap();

        transport_to(&sink)
            .send(invite_as_alternative)
            .await
            .unwrap();

        let mail = sink
            .wait_for_mail_to("visitor@example.com", WAIT)
            .await
            .unwrap();
        assert_eq!(mail.text_body, "Ihre PIN: 4711");
        assert_eq!(mail.html_body.as_deref(), Some("<p>Ihre PIN: 4711</p>"));
        let invite = mail.attachment_of_type("text/calendar").unwrap();
        assert_eq!(invite.filename, None);
        assert_eq!(invite.content, INVITE.as_bytes());
    }
}
