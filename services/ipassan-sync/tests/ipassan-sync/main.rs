//! ipassan-sync against real PostgreSQL and RabbitMQ and an in-process iPassan simulator (one
//! test binary: one link, one module per concern). Each test gets its own database, vhost and
//! simulator ([`support`]), so they run in parallel; the shutdown tests run the service binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod bulkheads;
mod faults;
mod health;
mod migrate;
mod retention;
mod shutdown;
mod support;
mod tenants;
mod visitor_access;
