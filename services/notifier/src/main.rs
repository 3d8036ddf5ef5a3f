use clap::Parser;
use notifier::SERVICE;
use notifier::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        None => {
            let settings = platform::config::load::<notifier::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.shared.log);
            platform::db::start_waiting_out_lost_connections(|| {
                notifier::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await?;
            Ok(())
        }
        Some(Command::Service(platform::cli::Command::Migrate)) => {
            platform::db::migrate_only(SERVICE, notifier::SCHEMA, &notifier::MIGRATOR).await?;
            Ok(())
        }
        Some(Command::DeadLetters(command)) => {
            let settings = platform::config::load::<notifier::CliSettings>()?;
            print!("{}", notifier::cli::run(&settings, command).await?);
            Ok(())
        }
    }
}
