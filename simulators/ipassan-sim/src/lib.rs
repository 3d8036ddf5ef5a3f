//! ipassan-sim: a stand-in for iPassan that follows `docs/contracts/ipassan.md` to the letter
//! (tokens, site scoping, persons, visitors with PINs, the error table), plus the control API of
//! the contract's last section (`/_sim/...`) so tests and the local run can seed it, move its
//! clock, try PINs at doors and inject faults.
//!
//! It knows nothing of ipassan-sync: both sides are written from the contract, so a client that
//! drifts from it fails here instead of in production. Tests start it in-process on port 0
//! ([`spawn`]); the local run starts the `ipassan-sim` binary.

pub mod api;
pub mod control;
pub mod control_client;
pub mod error;
pub mod form;
pub mod model;
pub mod traffic;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use control_client::SimControl;
pub use model::{ClientSeed, Person, Seed, SiteSeed, World};

/// The simulator's whole state, shared by every request.
#[derive(Clone, Default)]
pub struct SimState(Arc<Mutex<World>>);

impl SimState {
    pub fn new(world: World) -> Self {
        Self(Arc::new(Mutex::new(world)))
    }

    /// The world, locked. Never held across an `.await`.
    pub fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The API (logged, faultable) and the control API.
pub fn router(state: SimState) -> Router {
    let api = api::routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        traffic::log_and_fault,
    ));
    api.merge(control::routes())
        .fallback(|| async {
            error::ApiError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response()
        })
        .with_state(state)
}

/// Serves the simulator on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, state: SimState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// A simulator running in this process; stopped when dropped.
pub struct RunningSim {
    /// e.g. `http://127.0.0.1:41234` (the iPassan base URL for a client).
    pub base_url: String,
    pub state: SimState,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// A control-API client for this simulator.
    pub fn control(&self) -> SimControl {
        SimControl::new(&self.base_url)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on a free port of 127.0.0.1 (tests).
pub async fn spawn() -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let state = SimState::default();
    let served = state.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = serve(listener, served).await {
            tracing::error!(%error, "ipassan-sim stopped");
        }
    });
    Ok(RunningSim {
        base_url,
        state,
        task,
    })
}
