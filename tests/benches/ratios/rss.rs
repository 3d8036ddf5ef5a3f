//! Idle RSS of the release binaries (`BENCH_ONLY=rss`), each ready and idle (`VmRSS`). Target
//! < 20 MiB (fleet scale: [`IDLE_RSS_TARGET_MIB`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::mail_sink::MailSink;
use testkit::{TestBroker, TestDb};

use crate::setup::JWT_SECRET;
use crate::table::Row;

/// What a service may hold resident when idle, in MiB: a fleet runs many replicas.
const IDLE_RSS_TARGET_MIB: f64 = 20.0;

const SERVICES: [&str; 4] = ["booking-api", "ipassan-sync", "salto-sync", "notifier"];

/// `target/release`: the bench runs from `target/release/deps/`.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_row(name: &str, measured: String, pass: Option<bool>) -> Row {
    let row = Row {
        what: format!("idle RSS {name}"),
        measured,
        raw: "—".into(),
        ratio: "—".into(),
        target: format!("< {IDLE_RSS_TARGET_MIB} MiB"),
        pass,
    };
    row.print_now();
    row
}

pub async fn idle_rss() -> Vec<Row> {
    let dir = release_dir();
    println!("idle RSS of the release binaries in {}:", dir.display());
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "  {} not built in {}: run `cargo build --release --bins` first",
            missing.join(", "),
            dir.display()
        );
        return missing
            .iter()
            .map(|name| rss_row(name, "not built".into(), Some(false)))
            .collect();
    }
    let (db, broker) = tokio::join!(TestDb::create(), TestBroker::create());
    let ipassan = ipassan_sim::spawn().await.unwrap();
    let salto = salto_sim::RunningSim::start(0).await.unwrap();
    let mail = MailSink::start();
    let mut children = Vec::new();
    for name in SERVICES {
        let port = free_port();
        let mut env: Vec<(&str, String)> = vec![
            ("CONNECX__DATABASE__URL", db.url.clone()),
            ("CONNECX__AMQP__URL", broker.url.clone()),
            ("CONNECX__LOG__FORMAT", "json".into()),
        ];
        match name {
            "booking-api" => {
                env.push(("CONNECX__HTTP__HOST", "127.0.0.1".into()));
                env.push(("CONNECX__HTTP__PORT", port.to_string()));
                env.push(("CONNECX__AUTH__JWT_SECRET", JWT_SECRET.into()));
                // The bench books far more, and faster, for one resident than a person would.
                env.push(("CONNECX__LIMITS__WRITES_PER_MINUTE", "0".into()));
                env.push(("CONNECX__LIMITS__MAX_LIVE_BOOKINGS", "1000000".into()));
            }
            "ipassan-sync" => {
                env.push(("CONNECX__IPASSAN__BASE_URL", ipassan.base_url.clone()));
                env.push(("CONNECX__IPASSAN__CLIENT_ID", "connecx".into()));
                env.push(("CONNECX__IPASSAN__CLIENT_SECRET", "secret".into()));
            }
            "salto-sync" => {
                env.push(("CONNECX__SALTO__URL", salto.url()));
                env.push(("CONNECX__SALTO__AUTH_KIND", "none".into()));
            }
            _ => {
                env.push(("CONNECX__SMTP__HOST", mail.host()));
                env.push(("CONNECX__SMTP__PORT", mail.port().to_string()));
                env.push(("CONNECX__SMTP__TLS", "none".into()));
                env.push((
                    "CONNECX__SMTP__FROM",
                    "connecX <no-reply@bench.example>".into(),
                ));
                env.push(("CONNECX__OPS__ALERT_EMAIL", "ops@bench.example".into()));
            }
        }
        if name != "booking-api" {
            env.push(("CONNECX__HEALTH__HOST", "127.0.0.1".into()));
            env.push(("CONNECX__HEALTH__PORT", port.to_string()));
        }
        let log = std::env::temp_dir().join(format!("connecx-ratios-{name}.log"));
        let child = tokio::process::Command::new(dir.join(name))
            .envs(env)
            .env_remove("RUST_LOG")
            .current_dir(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        children.push((name, port, child, log));
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut ready = Vec::new();
    for (name, port, child, log) in &mut children {
        let deadline = Instant::now() + Duration::from_secs(60);
        let up = loop {
            if let Ok(Some(status)) = child.try_wait() {
                println!("  {name} exited ({status}); see {}", log.display());
                break false;
            }
            let answer = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                break true;
            }
            if Instant::now() > deadline {
                println!("  {name} not ready within 60 s; see {}", log.display());
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ready.push(up);
    }
    // Idle: nothing to do for a while (the relay polls, the cleaner ticks).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut rows = Vec::new();
    for ((name, _, child, _), up) in children.iter_mut().zip(ready) {
        let rss = child.id().and_then(rss_kib);
        let row = match (up, rss) {
            (true, Some((kib, anon, file))) => {
                let mib = kib as f64 / 1024.0;
                println!(
                    "    {name}: {mib:.1} MiB resident = {:.1} MiB heap/stacks (RssAnon) + {:.1} MiB \
                     of the binary and libraries (RssFile)",
                    anon as f64 / 1024.0,
                    file as f64 / 1024.0
                );
                rss_row(
                    name,
                    format!("{mib:.1} MiB"),
                    Some(mib < IDLE_RSS_TARGET_MIB),
                )
            }
            _ => rss_row(name, "not ready".into(), Some(false)),
        };
        rows.push(row);
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    rows
}

/// `VmRSS`, `RssAnon` and `RssFile` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?))
}
