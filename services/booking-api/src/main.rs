#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = platform::config::load::<booking_api::Settings>()?;
    platform::telemetry::init("booking-api", &settings.log);
    booking_api::Application::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await?;
    Ok(())
}
