//! Test support for the connecX services: a fresh PostgreSQL database and a fresh RabbitMQ vhost
//! per test on the machine's real servers, a real SMTP mail sink, and the checks of a service
//! binary's `migrate` command. Test infrastructure: it panics with a message saying what to start
//! when a server is missing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod broker;
pub mod db;
pub mod logs;
pub mod mail_sink;
pub mod migrate;
pub mod rabbitmq_definitions;
pub mod settings;

pub use broker::{EventTap, Tapped, TestBroker};
pub use db::TestDb;
pub use migrate::MigrateCommand;
pub use settings::shared_settings;
