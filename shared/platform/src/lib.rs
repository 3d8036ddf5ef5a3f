//! Plumbing every connecX service shares: configuration, telemetry, shutdown, the PostgreSQL pool,
//! and RabbitMQ (topology, confirmed publishing, and the worker runtime that retries and
//! dead-letters), and the command line every service binary shares (run, or `migrate`). A service
//! supplies its handler and its settings; it never talks to lapin itself.

pub mod amqp;
pub mod batch;
pub mod bulkhead;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod health;
pub mod metrics;
pub mod outages;
pub mod retention;
pub mod secrets;
pub mod shutdown;
pub mod snapshots;
pub mod stored_clients;
pub mod telemetry;
pub mod trace;
