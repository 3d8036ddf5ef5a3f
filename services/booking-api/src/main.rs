use platform::cli::Command;

const SERVICE: &str = "booking-api";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match platform::cli::parse(SERVICE) {
        None => {
            let settings = platform::config::load::<booking_api::Settings>()?;
            platform::telemetry::init(SERVICE, &settings.shared.log);
            platform::db::start_waiting_out_lost_connections(|| {
                booking_api::Application::build(settings.clone())
            })
            .await?
            .run_until_stopped(platform::shutdown::signal())
            .await?;
            Ok(())
        }
        Some(Command::Migrate) => {
            platform::db::migrate_only(SERVICE, booking_api::SCHEMA, &booking_api::MIGRATOR)
                .await?;
            Ok(())
        }
    }
}
