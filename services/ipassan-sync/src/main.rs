use ipassan_sync::SERVICE;
use platform::cli::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match platform::cli::parse(SERVICE) {
        None => {
            let settings = platform::config::load::<ipassan_sync::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.shared.log);
            platform::db::start_waiting_out_lost_connections(|| {
                ipassan_sync::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await?;
            Ok(())
        }
        Some(Command::Migrate) => {
            platform::db::migrate_only(SERVICE, ipassan_sync::SCHEMA, &ipassan_sync::MIGRATOR)
                .await?;
            Ok(())
        }
    }
}
