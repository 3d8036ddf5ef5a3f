//! Sending mail over SMTP with lettre (async, pooled, with timeouts).
//!
//! Failures are sorted once, here: a 4xx answer or a connection problem is transient (the
//! worker retries later); a 5xx answer for a recipient is permanent for that recipient.
//!
//! Plain and STARTTLS connections are made here, with `TCP_NODELAY`, and kept in a small pool of
//! our own. lettre 0.11.23 leaves Nagle's algorithm on, and it writes a message's end
//! (`CRLF.CRLF`) as a second small write after the body: the kernel then holds that end back
//! until the server acknowledges the body, which a server waiting for the end does only when its
//! delayed-ACK timer fires — 40 ms on Linux, for every mail (measured: 43 ms a mail against the
//! test sink, 0.7 ms with `TCP_NODELAY`; lettre's fix, PR #1159, is not released yet). Implicit
//! TLS (`smtp.tls = tls`) still uses lettre's own pooled transport.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

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
    /// What the mail is (its template, e.g. `visitor_access_visitor`): one event may send
    /// several mails to one address (a visitor who is also the resident gets both).
    pub kind: &'static str,
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

/// Conversations with the mail server at once, and connections kept idle for reuse: a batch's
/// mails beyond these wait for a connection rather than each opening one of its own (opening
/// and closing a connection a mail cost more than the mail; measured, README, Performance).
const CONNECTIONS: usize = 8;
/// How long a connection may stay idle (as lettre's pool was set).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle longer than this is asked whether it still answers (`NOOP`) before it is
/// used. One that carried a mail a moment ago is used as it is: the check is a round trip, a
/// fifth of a mail's conversation, and servers close idle connections after minutes, not
/// milliseconds. A connection that died meanwhile all the same (a server restarted) fails its
/// mail as transient, and the worker retries it, as any other connection failure.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The SMTP client; cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// A permit a conversation: at most [`CONNECTIONS`] at once.
    conversations: Arc<Semaphore>,
}

#[derive(Clone)]
enum Transport {
    /// Plain or STARTTLS: connections made here, with `TCP_NODELAY`.
    Direct(Arc<Connections>),
    /// Implicit TLS: lettre's pooled transport.
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        settings
            .check_plain_auth()
            .map_err(|e| MailError::Permanent(e.to_string()))?;
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            _ => None,
        };
        let timeout = Duration::from_secs(settings.timeout_secs);
        let transport = match settings.tls {
            SmtpTls::None | SmtpTls::Starttls => Transport::Direct(Arc::new(Connections {
                host: settings.host.clone(),
                port: settings.port,
                starttls: match settings.tls {
                    SmtpTls::Starttls => Some(
                        TlsParameters::new(settings.host.clone())
                            .map_err(|e| MailError::Permanent(format!("smtp.host: {e}")))?,
                    ),
                    _ => None,
                },
                credentials,
                timeout,
                hello: ClientId::default(),
                idle: Mutex::new(Vec::new()),
            })),
            SmtpTls::Tls => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                    .map_err(|e| MailError::Permanent(format!("smtp.host: {e}")))?
                    .port(settings.port)
                    .timeout(Some(timeout))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(CONNECTIONS as u32)
                            .idle_timeout(IDLE_TIMEOUT),
                    );
                if let Some(credentials) = credentials {
                    builder = builder.credentials(credentials);
                }
                Transport::Lettre(builder.build())
            }
        };
        let from = settings
            .from
            .parse()
            .map_err(|e| MailError::Permanent(format!("smtp.from: {e}")))?;
        Ok(Self {
            transport,
            from,
            conversations: Arc::new(Semaphore::new(CONNECTIONS)),
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
        // Waiting here is not the server's time: the conversation's timeout starts once it has a
        // connection. Each conversation ends within that timeout, so the wait is bounded too.
        let _conversation = self
            .conversations
            .acquire()
            .await
            .map_err(|_| MailError::Transient("the mailer is shutting down".into()))?;
        let started = Instant::now();
        let result = match &self.transport {
            Transport::Direct(connections) => {
                connections
                    .send(message.envelope(), &message.formatted())
                    .await
            }
            Transport::Lettre(transport) => {
                transport.send(message).await.map(|_| ()).map_err(classify)
            }
        };
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

/// SMTP connections made with `TCP_NODELAY` (see the module's comment), kept while idle.
struct Connections {
    host: String,
    port: u16,
    /// `Some` for STARTTLS (required, as lettre's `starttls_relay`).
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    /// For connecting, and for one mail's whole conversation.
    timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Connections {
    async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), MailError> {
        let conversation = async {
            let mut connection = self.connection().await?;
            let sent = connection.send(envelope, email).await;
            // lettre closes a connection after an error it cannot continue from.
            if !connection.has_broken() {
                self.keep(connection);
            }
            sent.map(|_| ()).map_err(classify)
        };
        tokio::time::timeout(self.timeout, conversation)
            .await
            .unwrap_or_else(|_| {
                Err(MailError::Transient(format!(
                    "no answer from {}:{} within {}s",
                    self.host,
                    self.port,
                    self.timeout.as_secs()
                )))
            })
    }

    /// An idle connection — used a moment ago, or still answering (`NOOP`, as lettre's pool
    /// checks) — or a new one.
    async fn connection(&self) -> Result<AsyncSmtpConnection, MailError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some((connection, since)) if since.elapsed() < CHECK_AFTER_IDLE => {
                    return Ok(connection);
                }
                Some((mut connection, since)) => {
                    if since.elapsed() < IDLE_TIMEOUT && connection.test_connected().await {
                        return Ok(connection);
                    }
                    connection.abort().await;
                }
                None => return self.connect().await,
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, MailError> {
        let unreachable = |e: std::io::Error| {
            MailError::Transient(format!(
                "cannot connect to the mail server {}:{}: {e}",
                self.host, self.port
            ))
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(unreachable)?;
        stream.set_nodelay(true).map_err(unreachable)?;
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                .await
                .map_err(classify)?;
        if let Some(tls) = &self.starttls {
            connection
                .starttls(tls.clone(), &self.hello)
                .await
                .map_err(classify)?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(classify)?;
        }
        Ok(connection)
    }

    fn keep(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < CONNECTIONS {
            idle.push((connection, Instant::now()));
        }
    }
}
