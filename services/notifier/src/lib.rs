//! notifier: turns outcomes into emails (docs/architecture.md, "Mails"). Result events become
//! mails to residents, visitors and managers; every message any worker (or the broker) gives up
//! on is stored and mailed to the building's managers; the ops CLI lists, shows, replays or
//! discards those dead letters.
//!
//! Modules: [`decision`] which mails an outcome or a dead letter produces and to whom, without
//! I/O; [`mails`] the text of each (from [`templates`], with the visit's invite from
//! [`calendar`]); [`dead_letter`] what a dead letter says; [`results`] and [`alerts`] the
//! handlers of the two queues; [`delivery`] sending each mail once and a booking's mails in
//! order, over SMTP ([`mailer`]); [`store`] this service's schema; [`retention`] what is erased
//! as visits age; [`cli`] the command line and the ops commands; [`settings`] the configuration;
//! [`startup`] building and running it all ([`Application::build`], then
//! [`Application::run_until_stopped`]) — `main` only loads the settings.

pub mod alerts;
pub mod calendar;
pub mod cli;
pub mod dead_letter;
pub mod decision;
pub mod delivery;
pub mod mailer;
pub mod mails;
pub mod results;
pub mod retention;
pub mod settings;
pub mod startup;
pub mod store;
pub mod templates;

#[cfg(test)]
mod fixtures;

pub use settings::{CliSettings, Settings};
pub use startup::{Application, RunError, StartupError};

/// This service's schema's migrations, run at start and by `notifier migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The notifier's schema in the shared database.
pub const SCHEMA: &str = "notifier";

/// The service's name: its binary, its logs and its retention runs.
pub const SERVICE: &str = "notifier";
