use clap::{Parser, Subcommand};
use uuid::Uuid;

const SERVICE: &str = "notifier";

/// notifier: emails for access outcomes and dead letters. With no command, runs the service
/// (migrating its schema first).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Service(platform::cli::Command),
    /// Inspect and act on dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Lists open dead letters, newest first.
    List {
        /// Include replayed and discarded ones.
        #[arg(long)]
        all: bool,
    },
    /// Shows one dead letter whole (a PIN in it masked).
    Show {
        id: Uuid,
        /// Shows PINs as they are.
        #[arg(long)]
        reveal: bool,
    },
    /// Republishes it to the queue it came from, with a fresh retry budget.
    Replay { id: Uuid },
    /// Closes it without republishing.
    Discard { id: Uuid },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        None => {
            let settings = platform::config::load::<notifier::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.log);
            platform::db::start_waiting_out_lost_connections(|| {
                notifier::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await
        }
        Some(Command::Service(platform::cli::Command::Migrate)) => {
            platform::db::migrate_only(SERVICE, notifier::SCHEMA, &notifier::MIGRATOR).await?;
            Ok(())
        }
        Some(Command::DeadLetters(command)) => {
            let settings = platform::config::load::<notifier::CliSettings>()?;
            let pool = notifier::cli_pool(&settings).await?;
            let output = match command {
                DeadLetterCommand::List { all } => notifier::cli::list(&pool, all).await?,
                DeadLetterCommand::Show { id, reveal } => {
                    notifier::cli::show(&pool, id, reveal).await?
                }
                DeadLetterCommand::Discard { id } => notifier::cli::discard(&pool, id).await?,
                DeadLetterCommand::Replay { id } => {
                    let publisher = platform::amqp::Publisher::new(&settings.amqp, "notifier-cli");
                    notifier::cli::replay(&pool, &publisher, id).await?
                }
            };
            print!("{output}");
            Ok(())
        }
    }
}
