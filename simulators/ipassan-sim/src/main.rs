//! `ipassan-sim --port 8090`: the simulator as a process, for the local run.

use clap::Parser;
use tokio::net::TcpListener;

/// A stand-in for iPassan (docs/contracts/ipassan.md) with a /_sim control API.
#[derive(Parser)]
struct Args {
    /// Interface to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// A JSON seed (the body of `POST /_sim/seed`) to load at start.
    #[arg(long)]
    seed: Option<std::path::PathBuf>,
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
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
    let mut world = ipassan_sim::World::default();
    world.token_lifetime = std::time::Duration::from_secs(args.token_lifetime_secs);
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read seed {}: {e}", path.display()))?;
        let seed: ipassan_sim::Seed = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("seed {} is not a valid seed: {e}", path.display()))?;
        world.seed(seed)?;
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    tracing::info!(address = %listener.local_addr()?, "ipassan-sim listening");
    let state = ipassan_sim::SimState::new(world);
    tokio::select! {
        served = ipassan_sim::serve(listener, state) => served?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
