//! Sending mail over SMTP with lettre (async, pooled, with timeouts).
//!
//! Failures are sorted once, here: a 4xx answer or a connection problem is transient (the
//! worker retries later); a 5xx answer for a recipient is permanent for that recipient.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use platform::config::{SmtpSettings, SmtpTls};

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail server unavailable, try later: {0}")]
    Transient(String),
    #[error("mail refused for good: {0}")]
    Permanent(String),
}

/// One mail, ready to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// An iCalendar invite (`.ics`), attached as `text/calendar`.
    pub calendar: Option<CalendarPart>,
}

#[derive(Debug, Clone)]
pub struct CalendarPart {
    pub filename: String,
    /// `REQUEST` or `CANCEL`.
    pub method: &'static str,
    pub content: String,
}

/// The SMTP client.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let builder = match settings.tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| MailError::Permanent(format!("smtp.host: {e}")))?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| MailError::Permanent(format!("smtp.host: {e}")))?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(Duration::from_secs(settings.timeout_secs)))
            .pool_config(
                PoolConfig::new()
                    .max_size(8)
                    .idle_timeout(Duration::from_secs(30)),
            );
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = settings
            .from
            .parse()
            .map_err(|e| MailError::Permanent(format!("smtp.from: {e}")))?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| MailError::Permanent(format!("bad recipient address {}: {e}", mail.to)))?;
        let alternative = MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone());
        let body = match &mail.calendar {
            None => alternative,
            Some(calendar) => {
                let content_type = ContentType::parse(&format!(
                    "text/calendar; charset=utf-8; method={}",
                    calendar.method
                ))
                .map_err(|e| MailError::Permanent(format!("calendar content type: {e}")))?;
                let invite: SinglePart = Attachment::new(calendar.filename.clone())
                    .body(calendar.content.clone(), content_type);
                MultiPart::mixed().multipart(alternative).singlepart(invite)
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(None)
            .multipart(body)
            .map_err(|e| MailError::Permanent(format!("cannot build the mail: {e}")))?;
        let started = std::time::Instant::now();
        let result = self
            .transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(classify);
        platform::metrics::record_external_call("smtp", "send", started, result.is_ok());
        result
    }
}

fn classify(error: lettre::transport::smtp::Error) -> MailError {
    if error.is_permanent() {
        MailError::Permanent(error.to_string())
    } else {
        // 4xx, timeouts, refused connections, TLS hiccups: all worth another try.
        MailError::Transient(error.to_string())
    }
}
