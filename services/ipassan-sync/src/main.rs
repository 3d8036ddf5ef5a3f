#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = platform::config::load::<ipassan_sync::Settings>()?;
    platform::telemetry::init("ipassan-sync", &settings.log);
    ipassan_sync::Application::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await
}
