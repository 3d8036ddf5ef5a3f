//! The notifier against real PostgreSQL, RabbitMQ and SMTP (the test sink), in one test binary:
//! one module per concern. Each test gets its own database, vhost and sink ([`support`]), so
//! they run in parallel; `migrate` runs the service binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod bookings;
mod crashed_sender;
mod dead_letters;
mod mailer;
mod migrate;
mod result_mails;
mod retention;
mod support;
