#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = platform::config::load::<salto_sync::Settings>()?;
    platform::telemetry::init("salto-sync", &settings.log);
    salto_sync::Application::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await
}
