//! booking-api: the connecX booking service (docs/architecture.md, "Services and what each owns").
//!
//! An axum JSON API for visitor and facility bookings and the building directory; every write
//! stores its event in a transactional outbox that a relay publishes to RabbitMQ; a consumer of
//! `booking-api.results` applies the workers' access outcomes back onto the bookings.
//! [`Application::build`] then [`Application::run_until_stopped`] — `main` only loads settings.

pub mod auth;
pub mod broker_health;
pub mod connections;
pub mod domain;
pub mod extract;
pub mod http_metrics;
pub mod idempotency;
pub mod openapi;
pub mod outbox;
pub mod pg_notify;
pub mod problem;
pub mod rate_limit;
pub mod refusals;
pub mod request_trace;
pub mod results;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod snapshot;
pub mod startup;
pub mod state;
pub mod store;
pub mod waiting;

pub use outbox::OutboxSettings;
pub use settings::{AuthSettings, Settings};
pub use startup::{Application, MIGRATOR, RunError, SCHEMA, StartupError};
