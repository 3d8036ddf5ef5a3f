//! The command line every service binary shares: with no command it runs the service; `migrate`
//! brings the service's schema up to date and exits. The second is a deployment step that must
//! finish before any replica starts (the Kubernetes initContainer, `deploy/k8s`), and it reads
//! only the database and log settings, so it needs none of the service's other secrets.
//!
//! A binary with commands of its own (the notifier's ops CLI) flattens [`Command`] into its
//! subcommands, so `migrate` reads the same in every binary.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// What a service binary can be asked to do instead of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Creates the service's database schema if needed, runs its migrations, and exits.
    /// Reads only CONNECX__DATABASE__* and CONNECX__LOG__*; safe beside running replicas.
    Migrate,
}

#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The command `service`'s binary was started with (`None`: run the service). Help, version and
/// usage errors are printed and end the process, as on any command line.
pub fn parse(service: &'static str) -> Option<Command> {
    try_parse_from(service, std::env::args_os()).unwrap_or_else(|error| error.exit())
}

/// [`parse`] on given arguments, the binary's name first.
pub fn try_parse_from<I, T>(service: &'static str, args: I) -> Result<Option<Command>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command()
        .name(service)
        .bin_name(service)
        .about(format!(
            "connecX {service}. With no command, runs the service (migrating its schema first)."
        ))
        .try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_runs_the_service_and_migrate_only_migrates() {
        assert_eq!(try_parse_from("salto-sync", ["salto-sync"]).unwrap(), None);
        assert_eq!(
            try_parse_from("salto-sync", ["salto-sync", "migrate"]).unwrap(),
            Some(Command::Migrate)
        );
    }

    #[test]
    fn an_unknown_command_is_refused_and_help_names_the_service() {
        let error = try_parse_from("booking-api", ["booking-api", "migrat"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidSubcommand);
        let help = try_parse_from("booking-api", ["booking-api", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("booking-api"), "{help}");
        assert!(help.contains("migrate"), "{help}");
    }
}
