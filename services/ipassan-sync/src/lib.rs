//! ipassan-sync: visitor bookings → iPassan visitors with a PIN (docs/architecture.md, "Visitor bookings and iPassan").
//!
//! For each `visitor_booking.*` event the worker converges iPassan to the latest version of the
//! booking it has seen: a booking with "provide access" gets a visitor attached to the resident,
//! inheriting the resident's access profile for exactly the visit window (site-local time), with
//! a PIN; a reschedule moves the window (same PIN); a cancellation revokes the PIN. Each outcome
//! is published as `visitor_access.{granted,updated,revoked,failed}.v1`.
//!
//! Each building's visitors go to its own iPassan tenant when an operator connected one, else to
//! the deployment default ([`tenants`]).
//!
//! Modules: [`decision`] the pure rules; [`store`] this service's schema; [`tenants`] which tenant
//! and one client each (the client itself is the `ipassan-client` crate); [`handler`] the step
//! that ties them together, and [`batch`] the same steps for several bookings at once; [`retention`] what is erased as visits age; [`settings`] the
//! configuration; [`startup`] building and running it all ([`Application::build`], then
//! [`Application::run_until_stopped`]) — `main` only loads the settings (or runs `migrate`).

pub mod batch;
pub mod decision;
pub mod handler;
pub mod retention;
pub mod settings;
pub mod startup;
pub mod store;
pub mod tenants;

pub use handler::BookingEvents;
pub use settings::{IpassanSettings, Settings};
pub use startup::{Application, RunError, StartupError};

/// This service's schema's migrations, run at start and by `ipassan-sync migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// This service's schema in the shared database.
pub const SCHEMA: &str = "ipassan_sync";

/// The service's name: its binary, its broker connections, its logs and its retention runs.
pub const SERVICE: &str = "ipassan-sync";
