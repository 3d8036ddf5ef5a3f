use platform::cli::Command;

const SERVICE: &str = "ipassan-sync";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match platform::cli::parse(SERVICE) {
        None => {
            let settings = platform::config::load::<ipassan_sync::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.log);
            platform::db::start_waiting_out_lost_connections(|| {
                ipassan_sync::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await
        }
        Some(Command::Migrate) => {
            platform::db::migrate_only(SERVICE, ipassan_sync::SCHEMA, &ipassan_sync::MIGRATOR)
                .await?;
            Ok(())
        }
    }
}
