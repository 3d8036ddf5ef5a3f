//! Where the CPU went: this process (the service under test, the simulators and the harness),
//! PostgreSQL and RabbitMQ, from /proc, so a ratio comes with the cost that explains it.

use std::collections::HashMap;

/// Clock ticks (USER_HZ, 100 on Linux) spent so far.
#[derive(Debug, Clone, Default)]
struct CpuTicks {
    this_process: u64,
    /// Per backend: only the backends of the benchmark's own database, so other work on the
    /// same server does not count (their process title names the database).
    postgres: HashMap<u32, u64>,
    rabbitmq: u64,
    machine_busy: u64,
    machine_total: u64,
}

/// utime + stime of one /proc/<pid>/stat, and the process's name.
fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<u64> = text[close + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based, proc(5)).
    Some((comm, fields.get(11)? + fields.get(12)?))
}

impl CpuTicks {
    fn now(database: &str) -> CpuTicks {
        let mut ticks = CpuTicks {
            this_process: stat_ticks(std::path::Path::new("/proc/self/stat")).map_or(0, |(_, t)| t),
            ..CpuTicks::default()
        };
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Some((comm, t)) = stat_ticks(&entry.path().join("stat")) else {
                    continue;
                };
                match comm.as_str() {
                    "postgres" => {
                        let title = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                        if String::from_utf8_lossy(&title).contains(database) {
                            ticks.postgres.insert(pid, t);
                        }
                    }
                    "beam.smp" => ticks.rabbitmq += t,
                    _ => {}
                }
            }
        }
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            ticks.machine_total = total;
            ticks.machine_busy = total - idle;
        }
        ticks
    }
}

/// CPU spent between [`CpuMeter::start`] and [`CpuMeter::report`], per operation.
pub struct CpuMeter {
    database: String,
    started: CpuTicks,
}

impl CpuMeter {
    /// `database`: the benchmark's database, whose backends are counted as PostgreSQL's share.
    pub fn start(database: &str) -> CpuMeter {
        CpuMeter {
            database: database.to_owned(),
            started: CpuTicks::now(database),
        }
    }

    /// One line: µs of CPU per operation in this process (service, simulators, harness), in the
    /// database's backends and in RabbitMQ (the whole broker: other vhosts' work counts too), and
    /// how busy the machine was.
    pub fn report(&self, label: &str, operations: usize) -> String {
        let end = CpuTicks::now(&self.database);
        let us = |ticks: u64| ticks as f64 * 10_000.0 / operations.max(1) as f64;
        let ours = end.this_process - self.started.this_process;
        let postgres: u64 = end
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.started.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        let rabbitmq = end.rabbitmq.saturating_sub(self.started.rabbitmq);
        let busy = end.machine_busy - self.started.machine_busy;
        let total = (end.machine_total - self.started.machine_total).max(1);
        let others = busy.saturating_sub(ours + postgres + rabbitmq);
        format!(
            "    cpu {label}: {:.0} µs/op = this process {:.0} + PostgreSQL {:.0} + RabbitMQ {:.0}; \
             machine {:.0} % busy, {:.0} % of that other work",
            us(ours + postgres + rabbitmq),
            us(ours),
            us(postgres),
            us(rabbitmq),
            100.0 * busy as f64 / total as f64,
            100.0 * others as f64 / busy.max(1) as f64,
        )
    }
}
