//! `salto-sim --port 8091`: the SHIP simulator as a process (local run, devstack).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "SALTO ProAccess SPACE simulator speaking SHIP over HTTP, with a /_sim control API"
)]
struct Args {
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long, env = "SALTO_SIM_PORT", default_value_t = 8091)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "SALTO_SIM_HOST", default_value = "127.0.0.1")]
    host: String,
    /// The Salto server's time zone (IANA), which the door clock follows; UTC when absent.
    #[arg(long, env = "SALTO_SIM_TIMEZONE")]
    timezone: Option<chrono_tz::Tz>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .compact()
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = listener.local_addr()?;
    println!("salto-sim listening on http://{addr}/ (control API under /_sim)");
    let state = salto_sim::SimState::default();
    state.lock().timezone = args.timezone;
    axum::serve(listener, salto_sim::app(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
