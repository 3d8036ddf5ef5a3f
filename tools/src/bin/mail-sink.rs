//! `mail-sink`: the SMTP server the notifier sends to on a developer machine.
//!
//! The same [`MailSink`] the tests use, on fixed local ports, so a local run delivers nowhere
//! but can still be read: each mail is printed to the terminal as it arrives, and
//! `http://127.0.0.1:8025/` lists them newest first (`/api/mails` as JSON). Mail content is
//! untrusted input, so the page escapes everything it shows and the terminal gets no control
//! characters.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use clap::Parser;
use serde::Serialize;
use testkit::mail_sink::{MailAttachment, MailSink, ReceivedMail};

/// Local SMTP sink: prints every mail it receives and lists them on a small web page.
#[derive(Parser)]
struct Args {
    /// SMTP port on 127.0.0.1 (point CONNECX__SMTP__PORT here, with CONNECX__SMTP__TLS=none).
    #[arg(long, default_value_t = 1025)]
    smtp_port: u16,
    /// Port on 127.0.0.1 for the web page (/) and the JSON list (/api/mails).
    #[arg(long, default_value_t = 8025)]
    http_port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = MailSink::bind((Ipv4Addr::LOCALHOST, args.smtp_port))
        .with_context(|| format!("cannot listen for SMTP on 127.0.0.1:{}", args.smtp_port))?;
    let http = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, args.http_port))
        .await
        .with_context(|| format!("cannot listen for HTTP on 127.0.0.1:{}", args.http_port))?;
    println!(
        "mail-sink: SMTP on 127.0.0.1:{}, mails at http://127.0.0.1:{}/",
        sink.port(),
        args.http_port
    );

    tokio::spawn(print_arrivals(sink.clone()));
    let app = Router::new()
        .route("/", get(mail_page))
        .route("/api/mails", get(mail_list))
        .with_state(sink);
    axum::serve(http, app)
        .with_graceful_shutdown(async {
            // If the signal handler cannot be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("HTTP server failed")?;
    Ok(())
}

async fn print_arrivals(sink: MailSink) {
    let mut printed = 0;
    loop {
        let mails = sink.wait_for(printed + 1, Duration::from_secs(3600)).await;
        for mail in mails.iter().skip(printed) {
            print_mail(mail);
        }
        printed = mails.len();
    }
}

fn print_mail(mail: &ReceivedMail) {
    println!(
        "──── {} ────",
        mail.received_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("From:    {}", for_terminal(&mail.envelope_from));
    println!("To:      {}", for_terminal(&mail.recipients.join(", ")));
    println!("Subject: {}", for_terminal(&mail.subject));
    if !mail.attachments.is_empty() {
        let names: Vec<String> = mail.attachments.iter().map(attachment_label).collect();
        println!("Attached: {}", for_terminal(&names.join(", ")));
    }
    println!();
    println!("{}", for_terminal(&mail.text_body));
}

/// Keeps a mail from moving the cursor or recolouring the terminal.
fn for_terminal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn attachment_label(attachment: &MailAttachment) -> String {
    let name = attachment.filename.as_deref().unwrap_or("(unnamed)");
    format!(
        "{name} ({}, {} bytes)",
        attachment.content_type,
        attachment.content.len()
    )
}

#[derive(Serialize)]
struct MailView {
    received_at: DateTime<Utc>,
    envelope_from: String,
    recipients: Vec<String>,
    subject: String,
    text_body: String,
    html_body: Option<String>,
    attachments: Vec<AttachmentView>,
    headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct AttachmentView {
    filename: Option<String>,
    content_type: String,
    size: usize,
}

impl From<ReceivedMail> for MailView {
    fn from(mail: ReceivedMail) -> Self {
        MailView {
            received_at: mail.received_at,
            envelope_from: mail.envelope_from,
            recipients: mail.recipients,
            subject: mail.subject,
            text_body: mail.text_body,
            html_body: mail.html_body,
            attachments: mail
                .attachments
                .into_iter()
                .map(|attachment| AttachmentView {
                    size: attachment.content.len(),
                    filename: attachment.filename,
                    content_type: attachment.content_type,
                })
                .collect(),
            headers: mail.headers,
        }
    }
}

fn newest_first(sink: &MailSink) -> impl Iterator<Item = ReceivedMail> {
    sink.mails().into_iter().rev()
}

async fn mail_list(State(sink): State<MailSink>) -> Json<Vec<MailView>> {
    Json(newest_first(&sink).map(MailView::from).collect())
}

async fn mail_page(State(sink): State<MailSink>) -> Html<String> {
    let mut page = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>mail-sink</title>\
         <style>body{font-family:sans-serif;margin:2em}article{border-top:1px solid #ccc;padding:.5em 0}\
         pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}.meta{color:#555}</style>\
         </head><body>\n",
    );
    let mails: Vec<ReceivedMail> = newest_first(&sink).collect();
    page.push_str(&format!(
        "<h1>mail-sink</h1><p class=\"meta\">{} mail(s) on SMTP port {}, newest first. \
         <a href=\"/api/mails\">JSON</a></p>\n",
        mails.len(),
        sink.port()
    ));
    for mail in &mails {
        page.push_str(&mail_article(mail));
    }
    page.push_str("</body></html>\n");
    Html(page)
}

fn mail_article(mail: &ReceivedMail) -> String {
    let attachments = if mail.attachments.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = mail.attachments.iter().map(attachment_label).collect();
        format!("<p>Attached: {}</p>", escape(&names.join(", ")))
    };
    format!(
        "<article><h2>{subject}</h2>\
         <p class=\"meta\">{time} · from {from} · to {to}</p>{attachments}<pre>{body}</pre></article>\n",
        subject = escape(&mail.subject),
        time = mail.received_at.format("%Y-%m-%d %H:%M:%S UTC"),
        from = escape(&mail.envelope_from),
        to = escape(&mail.recipients.join(", ")),
        body = escape(&mail.text_body),
    )
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_in_a_mail_is_shown_not_rendered() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }
}
