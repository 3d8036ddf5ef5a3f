//! salto-sync's service tests, one binary: real PostgreSQL and RabbitMQ, salto-sim over HTTP,
//! salto-sync replicas built as `main` builds them. Each module holds the tests of one concern;
//! [`support`] is what they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod cleaner;
mod facility_access;
mod faults;
mod migrate;
mod servers;
mod support;
