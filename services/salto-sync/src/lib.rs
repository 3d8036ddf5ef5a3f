//! salto-sync: facility bookings → SALTO ProAccess SPACE zone permissions (docs/architecture.md, "Facility bookings and the ledger").
//!
//! It consumes `facility_booking.*`, keeps the permission ledger in its schema (who holds each
//! (access level, zone) slot, who waits for it), makes Salto match the ledger through SHIP, and
//! publishes `facility_access.*` results. A nightly cleaner removes ended permissions — Salto
//! never does — and grants the bookings that waited for them.
//!
//! Each building's permissions live on its own Salto server when an operator connected one, else
//! on the deployment default; the ledger, its locks and the timetable pool are per server.
//!
//! - [`startup`]: building and running the service; [`settings`]: its configuration.
//! - [`ledger`]: the ledger's records; [`decision`]: its rules, plain functions without I/O;
//!   [`store`]: the SQL that keeps them.
//! - [`ledger_transaction`]: one locked read-modify-write of the ledger and Salto, and what it
//!   needs ([`context`]); [`error`]: why one did not complete.
//! - [`handler`]: booking and connection events, alone or in a [`batch`] of a server's;
//!   [`cleaner`]: the nightly run;
//!   [`timetables`]: the timetable pools and their sweeping; [`results`]: result events;
//!   [`servers`]: which server and one SHIP client each (the client itself is the `salto-ship`
//!   crate).

pub mod batch;
pub mod cleaner;
pub mod context;
pub mod decision;
pub mod error;
pub mod handler;
pub mod ledger;
pub mod ledger_transaction;
pub mod results;
pub mod servers;
pub mod settings;
pub mod startup;
pub mod store;
pub mod timetables;

pub use platform::clock::{Clock, ManualClock, SystemClock};
pub use settings::{AuthKind, CleanerSettings, SaltoSettings, Settings};
pub use startup::{Application, RunError, StartupError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// This service's schema in the shared database.
pub const SCHEMA: &str = "salto_sync";
