//! The child processes of the tools: the service binaries (and the mail sink) that devstack and
//! the soak run.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Starts `command` (which runs `program`) in a process group of its own, so that a terminal's
/// Ctrl-C reaches the caller alone and a signal to the group reaches the whole child; stdin
/// closed, stdout and stderr piped for the caller to read, and killed if the caller drops it
/// before stopping it. The child, and its pid (its group's id); `label` names it in errors.
pub fn spawn_in_own_group(
    command: &mut Command,
    program: &Path,
    label: &str,
) -> anyhow::Result<(Child, Pid)> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw)
        .with_context(|| format!("{label} exited as it started"))?;
    Ok((child, pid))
}
