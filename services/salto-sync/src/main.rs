use platform::cli::Command;

const SERVICE: &str = "salto-sync";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match platform::cli::parse(SERVICE) {
        None => {
            let settings = platform::config::load::<salto_sync::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.shared.log);
            platform::db::start_waiting_out_lost_connections(|| {
                salto_sync::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await?;
            Ok(())
        }
        Some(Command::Migrate) => {
            platform::db::migrate_only(SERVICE, salto_sync::SCHEMA, &salto_sync::MIGRATOR).await?;
            Ok(())
        }
    }
}
