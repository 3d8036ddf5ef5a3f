//! Process supervision of the service replicas: each replica is the service's real binary, started
//! as a child process with its `CONNECX__*` settings (as `devstack` does), its output read line by
//! line into the run's [`Evidence`]. The fault injector kills replicas with SIGKILL and starts them
//! again; a replica that dies on its own is a finding (recorded with its last lines) and is
//! restarted so the run goes on.
//!
//! A task owns each child until it is reaped, and signals reach the child only through that task,
//! so a signal never hits a recycled pid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};

use contracts::Service;

use crate::process::spawn_in_own_group;

use super::evidence::Evidence;

/// The workers a soak runs replicas of, besides booking-api (the fault injector kills these).
pub const WORKERS: [Service; 3] = [Service::IpassanSync, Service::SaltoSync, Service::Notifier];

/// One replica to run: which service, which copy, and its settings.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub service: Service,
    /// 1-based.
    pub index: usize,
    pub env: Vec<(String, String)>,
}

impl ReplicaSpec {
    pub fn label(&self) -> String {
        format!("{}#{}", self.service.name(), self.index)
    }
}

/// Where the service binaries are: `explicit`, or the cargo target directory the running
/// executable is in (`target/debug` for `target/debug/soak` and for a test binary in
/// `target/debug/deps`). Fails naming the build command when one is missing.
pub fn service_bin_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(dir) => dir.to_path_buf(),
        None => {
            let exe =
                std::env::current_exe().context("cannot tell where this program runs from")?;
            let mut dir = exe
                .parent()
                .map(Path::to_path_buf)
                .context("the running executable has no directory")?;
            if dir.file_name().is_some_and(|name| name == "deps") {
                dir.pop();
            }
            dir
        }
    };
    let missing: Vec<&str> = Service::ALL
        .iter()
        .map(|service| service.name())
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the soak runs the services' real binaries, and {} {} not built in {}. Build them first \
             with `cargo build --workspace --bins` (same profile as this run; add --release for a \
             release soak).",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            dir.display()
        );
    }
    Ok(dir)
}

/// A replica that stopped without being asked to.
#[derive(Debug, Clone)]
pub struct Crash {
    pub replica: String,
    pub status: String,
    pub last_lines: Vec<String>,
}

/// The running replicas. Cheap to clone; clones share.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    bin_dir: PathBuf,
    evidence: Evidence,
    echo: bool,
    /// Where each replica's lines are also written (`<replica>.log`), if anywhere.
    log_dir: Option<PathBuf>,
    state: Mutex<State>,
    exited: Notify,
}

#[derive(Default)]
struct State {
    replicas: BTreeMap<String, Slot>,
    crashes: Vec<Crash>,
    stopping: bool,
    kills: usize,
}

struct Slot {
    spec: ReplicaSpec,
    signals: Option<mpsc::UnboundedSender<Signal>>,
    running: bool,
    /// The next exit was asked for (a kill by the fault injector, or the final stop).
    exit_expected: bool,
}

impl Supervisor {
    /// `echo`: also copy every child line to this process's stderr, prefixed with its replica;
    /// `log_dir`: also append them to `<log_dir>/<replica>.log`.
    pub fn new(bin_dir: PathBuf, evidence: Evidence, echo: bool, log_dir: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                bin_dir,
                evidence,
                echo,
                log_dir,
                state: Mutex::new(State::default()),
                exited: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts (or starts again) a replica.
    pub fn start(&self, spec: ReplicaSpec) -> anyhow::Result<()> {
        let label = spec.label();
        let program = self.inner.bin_dir.join(spec.service.name());
        let mut command = Command::new(&program);
        // Nothing of the caller's own connecX settings may leak into a replica.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CONNECX") {
                command.env_remove(key);
            }
        }
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("CONNECX_ENVIRONMENT", "soak")
            // No config/*.toml of the caller's working directory either.
            .current_dir(std::env::temp_dir());
        let (mut child, pid) = spawn_in_own_group(&mut command, &program, &label)?;
        let service = spec.service.name();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_lines(stdout, self.clone(), service, label.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_lines(stderr, self.clone(), service, label.clone()));
        }
        let (signals, mut requests) = mpsc::unbounded_channel::<Signal>();
        self.state().replicas.insert(
            label.clone(),
            Slot {
                spec,
                signals: Some(signals),
                running: true,
                exit_expected: false,
            },
        );
        let supervisor = self.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = requests.recv() => {
                        // ESRCH: gone already, which is what was wanted.
                        let _ = kill(pid, signal);
                    }
                }
            };
            supervisor.on_exit(&label, status).await;
        });
        Ok(())
    }

    async fn on_exit(&self, label: &str, status: std::io::Result<ExitStatus>) {
        let crashed = {
            let mut state = self.state();
            let stopping = state.stopping;
            let Some(slot) = state.replicas.get_mut(label) else {
                return;
            };
            slot.running = false;
            slot.signals = None;
            let expected = std::mem::take(&mut slot.exit_expected);
            (!expected && !stopping).then(|| slot.spec.clone())
        };
        self.inner.exited.notify_waiters();
        let Some(spec) = crashed else {
            return;
        };
        // Let the output readers take the replica's last lines (its reason to die) first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = match &status {
            Ok(status) => status.to_string(),
            Err(error) => format!("cannot tell how: {error}"),
        };
        self.state().crashes.push(Crash {
            replica: label.to_owned(),
            status,
            last_lines: self.inner.evidence.tail(label),
        });
        eprintln!("[soak] {label} died on its own; restarting it");
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !self.state().stopping
            && let Err(error) = self.start(spec)
        {
            eprintln!("[soak] cannot restart {label}: {error:#}");
        }
    }

    /// The labels of the running replicas of `service`.
    pub fn running(&self, service: Service) -> Vec<String> {
        self.state()
            .replicas
            .iter()
            .filter(|(_, slot)| slot.running && slot.spec.service == service)
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// SIGKILLs a replica, waits for it to be gone, waits `down_for`, and starts it again.
    pub async fn kill_and_restart(&self, label: &str, down_for: Duration) -> anyhow::Result<()> {
        let spec = {
            let mut state = self.state();
            state.kills += 1;
            let Some(slot) = state.replicas.get_mut(label) else {
                bail!("no replica {label}");
            };
            slot.exit_expected = true;
            if let Some(signals) = &slot.signals {
                let _ = signals.send(Signal::SIGKILL);
            }
            slot.spec.clone()
        };
        self.wait_stopped(label, Duration::from_secs(10)).await;
        tokio::time::sleep(down_for).await;
        if self.state().stopping {
            return Ok(());
        }
        self.start(spec)
    }

    async fn wait_stopped(&self, label: &str, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let exited = self.inner.exited.notified();
            let running = self
                .state()
                .replicas
                .get(label)
                .is_some_and(|slot| slot.running);
            if !running {
                return true;
            }
            if tokio::time::timeout_at(deadline, exited).await.is_err() {
                return false;
            }
        }
    }

    /// Stops every replica: SIGTERM, then SIGKILL for those still running after `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let labels: Vec<String> = {
            let mut state = self.state();
            state.stopping = true;
            state
                .replicas
                .iter_mut()
                .filter(|(_, slot)| slot.running)
                .map(|(label, slot)| {
                    slot.exit_expected = true;
                    if let Some(signals) = &slot.signals {
                        let _ = signals.send(Signal::SIGTERM);
                    }
                    label.clone()
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        for label in &labels {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_stopped(label, left).await {
                if let Some(signals) = self
                    .state()
                    .replicas
                    .get(label)
                    .and_then(|slot| slot.signals.clone())
                {
                    let _ = signals.send(Signal::SIGKILL);
                }
                self.wait_stopped(label, Duration::from_secs(5)).await;
            }
        }
    }

    /// Replicas that died on their own so far.
    pub fn crashes(&self) -> Vec<Crash> {
        self.state().crashes.clone()
    }

    /// How many replicas the fault injector killed.
    pub fn kills(&self) -> usize {
        self.state().kills
    }
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    supervisor: Supervisor,
    service: &'static str,
    label: String,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut file = match &supervisor.inner.log_dir {
        Some(dir) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{label}.log")))
            .ok(),
        None => None,
    };
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                supervisor.inner.evidence.ingest(service, &label, text);
                if supervisor.inner.echo {
                    eprintln!("{label:>15} │ {text}");
                }
                if let Some(file) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "{text}");
                }
            }
        }
    }
}
