//! booking-api against real PostgreSQL and RabbitMQ: each test spawns the service on a random
//! port with its own database and vhost, and observes it as a client (and as the broker's other
//! side) would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod authz;
mod connections;
mod database;
mod facility_bookings;
mod idempotency;
mod limits;
mod migrate;
mod operations;
mod outbox;
mod results;
mod retention;
mod support;
mod timeouts;
mod validation;
mod visitor_bookings;
