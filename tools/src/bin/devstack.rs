//! `devstack`: the whole connecX system on a developer machine, with one command
//! (`scripts/run-local`, which builds the workspace and runs this).
//!
//! It expects PostgreSQL and RabbitMQ to run locally and says which command starts them when
//! they do not answer; it creates the `connecx` database if it is missing. Then it starts, from
//! the directory it was itself built into, the `mail-sink` and the four services with their
//! `CONNECX__*` settings (docs/architecture.md, "Configuration and operation"), and prints every line they write prefixed with their
//! name. Once booking-api is ready it seeds two demo buildings through booking-api's own API (so
//! the demo exercises the real code path, outbox included): `demo`, on the deployment's default
//! iPassan tenant and Salto server, and `bay`, which an operator connects to its own tenant and
//! server (two more simulators). It prints a `curl` that books a visitor as a resident, with a
//! token ready to paste.
//!
//! The children run in process groups of their own, so a Ctrl-C in the terminal reaches only
//! devstack, which then stops them in order: the services first (SIGTERM, SIGKILL after a grace
//! period) and the mail sink last, so mails still being sent on the way out arrive. A second
//! Ctrl-C kills at once. If any child dies on its own, devstack says so loudly and stops the rest
//! — a half-running system would only mislead.
//!
//! `devstack --print-definitions` prints the RabbitMQ definitions of `deploy/rabbitmq/`.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Days, TimeZone, Utc};
use chrono_tz::Tz;
use clap::Parser;
use contracts::Role;
use nix::sys::signal::{Signal, killpg};
use platform::config::AmqpSettings;
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tools::process::spawn_in_own_group;

/// Only for this machine: booking-api trusts tokens signed with it.
const DEV_JWT_SECRET: &str = "connecx-devstack-local-only-secret-do-not-deploy";
/// Only for this machine: `CONNECX__SECRETS__KEY` of the services (32 bytes, base64).
const DEV_SEALING_KEY: &str = "ZGV2c3RhY2stbG9jYWwtb25seS1zZWFsaW5nLWtleSE=";
const MAIL_SINK: &str = "mail-sink";
const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const START_RABBITMQ: &str = "rabbitmq-server -detached";
/// Wide enough for every child's name, so the output lines up.
const LABEL_WIDTH: usize = 12;
/// How long the printed tokens stay valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Runs connecX locally: mail sink + booking-api + ipassan-sync + salto-sync + notifier, with a
/// seeded demo building. Ctrl-C stops everything.
#[derive(Parser)]
struct Args {
    /// booking-api's HTTP port.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// The mail sink's SMTP port (the notifier sends there).
    #[arg(long, default_value_t = 1025)]
    smtp_port: u16,
    /// The mail sink's web page.
    #[arg(long, default_value_t = 8025)]
    mail_port: u16,
    /// The iPassan simulator's port.
    #[arg(long, default_value_t = 8090)]
    ipassan_port: u16,
    /// The Salto SHIP simulator's port.
    #[arg(long, default_value_t = 8091)]
    salto_port: u16,
    /// The bay building's own iPassan tenant (a second simulator).
    #[arg(long, default_value_t = 8092)]
    ipassan_bay_port: u16,
    /// The bay building's own Salto server (a second simulator, wanting a SHIP key).
    #[arg(long, default_value_t = 8093)]
    salto_bay_port: u16,
    /// HS256 secret booking-api checks tokens with and devstack signs the demo tokens with
    /// [default: a fixed secret for local use only].
    #[arg(
        long,
        env = "CONNECX_DEVSTACK_JWT_SECRET",
        default_value = DEV_JWT_SECRET,
        hide_default_value = true
    )]
    jwt_secret: String,
    /// The database the services share; created when missing.
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/connecx?sslmode=disable"
    )]
    database_url: String,
    /// The broker, vhost included.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Where alerts go when no building manager is known.
    #[arg(long, default_value = "ops@example.com")]
    ops_email: String,
    /// Where the service binaries are [default: the directory devstack itself is in].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds to wait for booking-api's /readyz (the first start runs every migration).
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Seconds a child gets to stop after SIGTERM before it is killed.
    #[arg(long, default_value_t = 10)]
    stop_timeout: u64,
    /// Print deploy/rabbitmq/definitions.json as the code defines it, and exit.
    #[arg(long)]
    print_definitions: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if args.print_definitions {
        print_definitions()
    } else {
        run(args).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\n{}devstack: {error:#}{}", Style::alert(), Style::reset());
            ExitCode::FAILURE
        }
    }
}

fn print_definitions() -> anyhow::Result<()> {
    let definitions = testkit::rabbitmq_definitions::default_definitions();
    println!("{}", serde_json::to_string_pretty(&definitions)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure_database(&args.database_url).await?;
    check_rabbitmq(&args.amqp_url).await?;
    check_ports_free(&args)?;
    let children = children(&args);
    let bin_dir = bin_dir(&args, &children)?;

    // The mail sink and the simulators first, seeded before any service starts: salto-sync's
    // cleaner looks at Salto as it starts (a fresh simulator, a database kept from an earlier
    // run), and the workers may call them at once.
    let (simulators, services): (Vec<_>, Vec<_>) = children
        .into_iter()
        .partition(|child| child.binary == MAIL_SINK || child.binary.ends_with("-sim"));
    let mut stack = Stack::new(Duration::from_secs(args.stop_timeout));
    let ending = match spawn_all(&mut stack, &bin_dir, simulators) {
        Err(failed) => failed,
        Ok(()) => match seed_simulators_or_stop(&mut stack, &args).await {
            Err(ending) => ending,
            Ok(()) => match spawn_all(&mut stack, &bin_dir, services) {
                Err(failed) => failed,
                Ok(()) => match start_demo(&mut stack, &args).await {
                    Ok(()) => watch(&mut stack).await,
                    Err(ending) => ending,
                },
            },
        },
    };
    stack.stop_all().await;
    match ending {
        Ending::StopRequested => Ok(()),
        Ending::Died { name, status } => Err(anyhow!(
            "{name} exited unexpectedly ({}); its last lines are above",
            describe(&status)
        )),
        Ending::Failed(error) => Err(error),
    }
}

/// Why devstack stops.
enum Ending {
    /// Ctrl-C, SIGTERM or a closed terminal.
    StopRequested,
    /// A child stopped on its own.
    Died {
        name: &'static str,
        status: std::io::Result<ExitStatus>,
    },
    Failed(anyhow::Error),
}

fn spawn_all(stack: &mut Stack, bin_dir: &Path, children: Vec<ChildSpec>) -> Result<(), Ending> {
    for child in children {
        stack.spawn(bin_dir, child).map_err(Ending::Failed)?;
    }
    Ok(())
}

/// Seeds the simulators — unless a child dies or a stop is requested first.
async fn seed_simulators_or_stop(stack: &mut Stack, args: &Args) -> Result<(), Ending> {
    let seeding = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        seed_simulators(&client, args).await
    };
    tokio::select! {
        result = seeding => result.map_err(Ending::Failed),
        exit = stack.next_exit() => Err(died(exit)),
        () = stop_requested() => Err(Ending::StopRequested),
    }
}

/// Waits for booking-api, seeds the demo and prints how to use it — unless a child dies or a
/// stop is requested first.
async fn start_demo(stack: &mut Stack, args: &Args) -> Result<(), Ending> {
    let api = format!("http://127.0.0.1:{}", args.http_port);
    let bring_up = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        wait_until_ready(&client, &api, Duration::from_secs(args.ready_timeout)).await?;
        let tokens = seed_demo(
            &client,
            &api,
            &args.jwt_secret,
            (args.ipassan_bay_port, args.salto_bay_port),
        )
        .await?;
        let window = tomorrow_evening(Utc::now(), demo::TIMEZONE)?;
        Ok::<_, anyhow::Error>((tokens, window))
    };
    tokio::select! {
        result = bring_up => match result {
            Ok((tokens, window)) => {
                print_demo(args, &tokens, window);
                Ok(())
            }
            Err(error) => Err(Ending::Failed(error)),
        },
        exit = stack.next_exit() => Err(died(exit)),
        () = stop_requested() => Err(Ending::StopRequested),
    }
}

/// Runs until a child dies or a stop is requested.
async fn watch(stack: &mut Stack) -> Ending {
    tokio::select! {
        exit = stack.next_exit() => died(exit),
        () = stop_requested() => Ending::StopRequested,
    }
}

fn died(exit: Exit) -> Ending {
    let banner = "!".repeat(78);
    eprintln!(
        "{}{banner}\n  {} EXITED UNEXPECTEDLY ({}) — stopping everything else\n{banner}{}",
        Style::alert(),
        exit.name,
        describe(&exit.status),
        Style::reset()
    );
    Ending::Died {
        name: exit.name,
        status: exit.status,
    }
}

/// Ctrl-C, SIGTERM, or the terminal going away (SIGHUP: the children are in their own process
/// groups, so nobody else would tell them).
async fn stop_requested() {
    let hangup = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangups) => {
                hangups.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = platform::shutdown::signal() => {}
        () = hangup => {}
    }
}

// ── What runs ──────────────────────────────────────────────────────────────────────────────

/// One process devstack starts: a binary next to devstack, its arguments and its settings.
struct ChildSpec {
    /// What its lines are prefixed with.
    name: &'static str,
    binary: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl ChildSpec {
    fn new(name: &'static str) -> Self {
        Self::instance(name, name)
    }

    /// Another instance of `binary`, called `name`.
    fn instance(binary: &'static str, name: &'static str) -> Self {
        Self {
            name,
            binary,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn arg(mut self, arg: impl ToString) -> Self {
        self.args.push(arg.to_string());
        self
    }

    fn env(mut self, key: &'static str, value: impl ToString) -> Self {
        self.env.push((key, value.to_string()));
        self
    }

    /// The settings every service reads (docs/architecture.md, "Configuration and operation").
    fn with_database_and_broker(self, args: &Args) -> Self {
        // Each service as its own PostgreSQL role (deploy/postgres/roles.sql, applied by
        // `ensure_database`), as in a deployment.
        let schema = match self.binary {
            "booking-api" => "booking",
            "ipassan-sync" => "ipassan_sync",
            "salto-sync" => "salto_sync",
            "notifier" => "notifier",
            other => unreachable!("{other} has no database"),
        };
        let database_url =
            testkit::db::url_as(&args.database_url, testkit::db::service_role(schema));
        // And as its own RabbitMQ user (made by `check_rabbitmq`).
        let amqp_url = match contracts::Service::from_name(self.binary) {
            Some(service) => testkit::broker::url_as(
                &args.amqp_url,
                service.broker_user(),
                &testkit::rabbitmq_definitions::local_password(service),
            ),
            None => args.amqp_url.clone(),
        };
        self.env("CONNECX__DATABASE__URL", database_url)
            .env("CONNECX__AMQP__URL", amqp_url)
    }

    /// The key that seals buildings' connection secrets (local use only).
    fn with_sealing_key(self) -> Self {
        self.env("CONNECX__SECRETS__KEY", DEV_SEALING_KEY)
    }
}

/// Everything devstack starts, in start order.
fn children(args: &Args) -> Vec<ChildSpec> {
    vec![
        ChildSpec::new(MAIL_SINK)
            .arg("--smtp-port")
            .arg(args.smtp_port)
            .arg("--http-port")
            .arg(args.mail_port),
        // ── Simulators: started and seeded (`seed_simulators`) before the services ─────────
        ChildSpec::new("ipassan-sim")
            .arg("--port")
            .arg(args.ipassan_port),
        ChildSpec::new("salto-sim")
            .arg("--port")
            .arg(args.salto_port)
            .arg("--timezone")
            .arg(demo::TIMEZONE.name()),
        ChildSpec::instance("ipassan-sim", "ipassan-bay")
            .arg("--port")
            .arg(args.ipassan_bay_port),
        ChildSpec::instance("salto-sim", "salto-bay")
            .arg("--port")
            .arg(args.salto_bay_port)
            .arg("--timezone")
            .arg(demo::TIMEZONE.name()),
        ChildSpec::new("booking-api")
            .with_database_and_broker(args)
            .with_sealing_key()
            // Only this machine: the demo secret must not open the API to the network.
            .env("CONNECX__HTTP__HOST", "127.0.0.1")
            .env("CONNECX__HTTP__PORT", args.http_port)
            .env("CONNECX__AUTH__JWT_SECRET", &args.jwt_secret)
            // The deployment's defaults: booking-api reads only that they exist.
            .env(
                "CONNECX__IPASSAN__BASE_URL",
                format!("http://127.0.0.1:{}", args.ipassan_port),
            )
            .env(
                "CONNECX__SALTO__URL",
                format!("http://127.0.0.1:{}/", args.salto_port),
            ),
        ChildSpec::new("ipassan-sync")
            .with_database_and_broker(args)
            .with_sealing_key()
            .env(
                "CONNECX__IPASSAN__BASE_URL",
                format!("http://127.0.0.1:{}", args.ipassan_port),
            )
            .env("CONNECX__IPASSAN__CLIENT_ID", demo::IPASSAN_CLIENT_ID)
            .env(
                "CONNECX__IPASSAN__CLIENT_SECRET",
                demo::IPASSAN_CLIENT_SECRET,
            ),
        ChildSpec::new("salto-sync")
            .with_database_and_broker(args)
            .with_sealing_key()
            .env(
                "CONNECX__SALTO__URL",
                format!("http://127.0.0.1:{}/", args.salto_port),
            )
            .env("CONNECX__SALTO__AUTH_KIND", "none"),
        ChildSpec::new("notifier")
            .with_database_and_broker(args)
            .env("CONNECX__SMTP__HOST", "127.0.0.1")
            .env("CONNECX__SMTP__PORT", args.smtp_port)
            .env("CONNECX__SMTP__TLS", "none")
            .env("CONNECX__SMTP__FROM", "connecX <no-reply@connecx.example>")
            .env("CONNECX__OPS__ALERT_EMAIL", &args.ops_email),
    ]
}

fn bin_dir(args: &Args, children: &[ChildSpec]) -> anyhow::Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("cannot tell where devstack runs from; pass --bin-dir")?
            .parent()
            .map(Path::to_path_buf)
            .context("devstack has no parent directory; pass --bin-dir")?,
    };
    let mut missing: Vec<&str> = children
        .iter()
        .map(|child| child.binary)
        .filter(|binary| !dir.join(binary).is_file())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        bail!(
            "{} not built in {}. Build everything with `cargo build --workspace --bins` \
             (scripts/run-local does that before starting devstack).",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}

// ── Local servers ──────────────────────────────────────────────────────────────────────────

/// Connects to PostgreSQL and creates the services' database when it is missing.
async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(database_url)
        .with_context(|| format!("--database-url `{database_url}` is not a PostgreSQL URL"))?;
    let database = options
        .get_database()
        .context("--database-url must name a database, e.g. …/connecx")?
        .to_owned();
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let mut admin = timeout(
        Duration::from_secs(5),
        PgConnection::connect_with(&options.clone().database("postgres")),
    )
    .await
    .map_err(|_| anyhow!("timed out"))
    .and_then(|connected| connected.map_err(anyhow::Error::from))
    .map_err(|error| {
        anyhow!(
            "PostgreSQL is not reachable at {server} ({error}).\nStart it with:\n  {START_POSTGRES}"
        )
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut admin)
            .await
            .context("cannot list PostgreSQL's databases")?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
        {
            Ok(_) => say(&format!("created database {database} on {server}")),
            // Someone else created it meanwhile: just as good.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => {
                return Err(error).context(format!("cannot create database {database}"));
            }
        }
    }
    let _ = admin.close().await;
    // The services' roles and schemas (idempotent; hands over schemas an earlier run made).
    let mut connecx = PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot connect to database {database} on {server}"))?;
    sqlx::raw_sql(testkit::db::ROLES_SQL)
        .execute(&mut connecx)
        .await
        .context("deploy/postgres/roles.sql failed (it needs a superuser in --database-url)")?;
    let _ = connecx.close().await;
    Ok(())
}

async fn check_rabbitmq(amqp_url: &str) -> anyhow::Result<()> {
    let settings = AmqpSettings {
        url: amqp_url.to_owned(),
        prefetch: 1,
        delivery_limit: 1,
        drain_timeout_secs: 30,
    };
    let connected = timeout(
        Duration::from_secs(5),
        platform::amqp::connect(&settings, "devstack (start-up check)"),
    )
    .await;
    match connected {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "checked".into()).await;
        }
        Ok(Err(error)) => bail!("{error}.\nStart RabbitMQ with:\n  {START_RABBITMQ}"),
        Err(_) => bail!(
            "RabbitMQ did not answer within 5 s at {}.\nStart it with:\n  {START_RABBITMQ}",
            platform::config::redact_url(amqp_url)
        ),
    }
    // Each service connects as its own user, allowed only its part of the topology, as in a
    // deployment: made (or their local passwords set again) as the user of --amqp-url.
    let admin_url = amqp_url.to_owned();
    tokio::task::spawn_blocking(move || {
        contracts::Service::ALL.into_iter().try_for_each(|service| {
            testkit::broker::grant_service_user(&admin_url, service).map(|_| ())
        })
    })
    .await?
    .map_err(|error| {
        anyhow!(
            "cannot make the services' RabbitMQ users ({error}).\nThe user of --amqp-url must \
             be an administrator, and the management API must be on:\n  \
             rabbitmq-plugins enable rabbitmq_management"
        )
    })
}

/// A taken port would otherwise show up as a child dying with "address in use" among the logs.
fn check_ports_free(args: &Args) -> anyhow::Result<()> {
    for (port, flag) in [
        (args.http_port, "--http-port"),
        (args.smtp_port, "--smtp-port"),
        (args.mail_port, "--mail-port"),
        (args.ipassan_port, "--ipassan-port"),
        (args.salto_port, "--salto-port"),
        (args.ipassan_bay_port, "--ipassan-bay-port"),
        (args.salto_bay_port, "--salto-bay-port"),
    ] {
        // The wildcard address collides with a listener on any local address.
        if let Err(error) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
            bail!(
                "port {port} is taken ({error}) — is an earlier devstack still running? \
                 Stop it, or choose another port with {flag}."
            );
        }
    }
    Ok(())
}

// ── The demo ───────────────────────────────────────────────────────────────────────────────

/// The demo building's people and doors, as iPassan and Salto know them.
async fn seed_simulators(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let seed = json!({
        "sites": {demo::IPASSAN_SITE: {
            "timezone": demo::TIMEZONE.name(),
            "persons": [{"id": demo::IPASSAN_PERSON, "type": 1, "firstName": "Alice",
                         "lastName": "Resident", "email": "alice@demo.connecx.example",
                         "accessProfileId": demo::IPASSAN_PROFILE}],
            "profiles": {demo::IPASSAN_PROFILE: [demo::IPASSAN_DOOR, demo::APARTMENT]},
        }},
        "clients": [{"client_id": demo::IPASSAN_CLIENT_ID,
                     "client_secret": demo::IPASSAN_CLIENT_SECRET,
                     "sites": [demo::IPASSAN_SITE]}],
    });
    seed_simulator(client, "ipassan-sim", args.ipassan_port, seed).await?;
    say("seeded ipassan-sim with the demo site, its resident and her access profile");

    let seed = json!({
        "timezone": demo::TIMEZONE.name(),
        "groups": [{"ext_id": demo::ACCESS_LEVEL, "name": "Apartment 101"}],
        "zones": [{"ext_id": demo::ZONE, "name": "Games room"}],
    });
    seed_simulator(client, "salto-sim", args.salto_port, seed).await?;
    say("seeded salto-sim with the apartment's access level and the games room's zone");

    // The bay building's own tenant and server.
    let tenant = json!({
        "sites": {bay::IPASSAN_SITE: {
            "timezone": demo::TIMEZONE.name(),
            "persons": [{"id": bay::IPASSAN_PERSON, "type": 1, "firstName": "Carla",
                         "lastName": "Resident", "email": "carla@bay.connecx.example",
                         "accessProfileId": bay::IPASSAN_PROFILE}],
            "profiles": {bay::IPASSAN_PROFILE: [bay::IPASSAN_DOOR, bay::APARTMENT]},
        }},
        "clients": [{"client_id": bay::IPASSAN_CLIENT_ID,
                     "client_secret": bay::IPASSAN_CLIENT_SECRET,
                     "sites": [bay::IPASSAN_SITE]}],
    });
    seed_simulator(client, "ipassan-bay", args.ipassan_bay_port, tenant).await?;
    let server = json!({
        "timezone": demo::TIMEZONE.name(),
        "groups": [{"ext_id": bay::ACCESS_LEVEL, "name": "Bay apartment 201"}],
        "zones": [{"ext_id": demo::ZONE, "name": "Bay games room"}],
        "auth": {"kind": "key", "key": bay::SHIP_KEY},
    });
    seed_simulator(client, "salto-bay", args.salto_bay_port, server).await?;
    say("seeded the bay building's own iPassan tenant and Salto server (which wants a SHIP key)");
    Ok(())
}

async fn seed_simulator(
    client: &reqwest::Client,
    name: &str,
    port: u16,
    seed: serde_json::Value,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/_sim/seed");
    // Just spawned, it may not listen yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        match client.post(&url).json(&seed).send().await {
            Err(error) if error.is_connect() && Instant::now() < deadline => {
                sleep(Duration::from_millis(200)).await;
            }
            sent => break sent.with_context(|| format!("seeding {name}: POST {url} failed"))?,
        }
    };
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("seeding {name} answered {status}:\n{body}");
    }
    Ok(())
}

/// The demo building, through booking-api's admin API (the IDs match the simulators' seeds).
mod demo {
    pub const TIMEZONE: chrono_tz::Tz = chrono_tz::Australia::Sydney;
    pub const BUILDING: &str = "demo";
    pub const MANAGER: &str = "manager-demo";
    pub const MANAGER_EMAIL: &str = "manager@demo.connecx.example";
    pub const IPASSAN_SITE: &str = "demo-site";
    pub const APARTMENT: &str = "apt-101";
    /// Salto access level ExtID of the apartment.
    pub const ACCESS_LEVEL: &str = "AL-APT-101";
    pub const FACILITY: &str = "games-room";
    /// Salto Zone ID of the facility.
    pub const ZONE: &str = "GAMES-ROOM";
    pub const SYNCED_RESIDENT: &str = "res-alice";
    pub const IPASSAN_PERSON: &str = "p-1001";
    /// The iPassan access profile of the apartment, and a door of it.
    pub const IPASSAN_PROFILE: &str = "ap-apt-101";
    pub const IPASSAN_DOOR: &str = "main-entrance";
    /// The credentials ipassan-sync uses at the iPassan simulator (local only).
    pub const IPASSAN_CLIENT_ID: &str = "connecx-devstack";
    pub const IPASSAN_CLIENT_SECRET: &str = "devstack-local-only";
    pub const UNSYNCED_RESIDENT: &str = "res-bob";
}

/// The second demo building, on its own iPassan tenant and Salto server (connected by an
/// operator through booking-api, like connecX staff would).
mod bay {
    pub const BUILDING: &str = "bay";
    pub const MANAGER: &str = "manager-bay";
    pub const MANAGER_EMAIL: &str = "manager@bay.connecx.example";
    pub const IPASSAN_SITE: &str = "bay-site";
    pub const APARTMENT: &str = "apt-201";
    pub const ACCESS_LEVEL: &str = "AL-APT-201";
    pub const RESIDENT: &str = "res-carla";
    pub const IPASSAN_PERSON: &str = "p-2001";
    pub const IPASSAN_PROFILE: &str = "ap-apt-201";
    pub const IPASSAN_DOOR: &str = "bay-entrance";
    pub const IPASSAN_CLIENT_ID: &str = "connecx-bay";
    pub const IPASSAN_CLIENT_SECRET: &str = "bay-tenant-local-only";
    pub const SHIP_KEY: &str = "bay-ship-key-local-only";
    pub const OPERATOR: &str = "operator-demo";
}

/// Tokens for the demo's people, valid for [`TOKEN_LIFETIME`].
struct DemoTokens {
    manager: String,
    synced_resident: String,
    unsynced_resident: String,
    bay_resident: String,
    operator: String,
}

/// The claims booking-api reads (docs/architecture.md, "Services and what each owns").
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: Role,
    #[serde(skip_serializing_if = "str::is_empty")]
    building_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    apartment_id: Option<&'a str>,
    exp: i64,
}

/// A token of `sub` in `building` (none for an operator).
fn mint(
    secret: &str,
    sub: &str,
    role: Role,
    building: &str,
    apartment_id: Option<&str>,
) -> anyhow::Result<String> {
    let lifetime = chrono::Duration::from_std(TOKEN_LIFETIME).context("token lifetime")?;
    let claims = Claims {
        sub,
        role,
        building_id: building,
        apartment_id,
        exp: (Utc::now() + lifetime).timestamp(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign a demo token")
}

async fn wait_until_ready(
    client: &reqwest::Client,
    api: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    say(&format!("waiting for booking-api at {api}/readyz …"));
    let deadline = Instant::now() + patience;
    loop {
        let last = match client.get(format!("{api}/readyz")).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!("it answered {}", response.status()),
            Err(error) => format!("{error}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "booking-api was not ready after {} s ({last}); its log above says why",
                patience.as_secs()
            );
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// Upserts the demo building through booking-api's admin API, as a manager would.
async fn seed_demo(
    client: &reqwest::Client,
    api: &str,
    secret: &str,
    (ipassan_bay_port, salto_bay_port): (u16, u16),
) -> anyhow::Result<DemoTokens> {
    let tokens = DemoTokens {
        manager: mint(secret, demo::MANAGER, Role::Manager, demo::BUILDING, None)?,
        synced_resident: mint(
            secret,
            demo::SYNCED_RESIDENT,
            Role::Resident,
            demo::BUILDING,
            Some(demo::APARTMENT),
        )?,
        unsynced_resident: mint(
            secret,
            demo::UNSYNCED_RESIDENT,
            Role::Resident,
            demo::BUILDING,
            Some(demo::APARTMENT),
        )?,
        bay_resident: mint(
            secret,
            bay::RESIDENT,
            Role::Resident,
            bay::BUILDING,
            Some(bay::APARTMENT),
        )?,
        operator: mint(secret, bay::OPERATOR, Role::Operator, "", None)?,
    };
    let admin = Admin {
        client,
        api,
        token: &tokens.manager,
    };
    admin
        .put(
            &format!("/v1/buildings/{}", demo::BUILDING),
            json!({
                "name": "Demo Tower",
                "timezone": demo::TIMEZONE.name(),
                "manager_emails": [demo::MANAGER_EMAIL],
                "ipassan_site": demo::IPASSAN_SITE,
                "double_booking_policy": "auto",
            }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/apartments/{}", demo::APARTMENT),
            json!({ "access_control_id": demo::ACCESS_LEVEL }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/facilities/{}", demo::FACILITY),
            json!({ "name": "Games room", "access_control_facility_id": demo::ZONE }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/residents/{}", demo::SYNCED_RESIDENT),
            json!({
                "name": "Alice Resident",
                "email": "alice@demo.connecx.example",
                "apartment_id": demo::APARTMENT,
                "ipassan_person_id": demo::IPASSAN_PERSON,
            }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/residents/{}", demo::UNSYNCED_RESIDENT),
            json!({
                "name": "Bob Resident",
                "email": "bob@demo.connecx.example",
                "apartment_id": demo::APARTMENT,
                "ipassan_person_id": null,
            }),
        )
        .await?;
    say(&format!(
        "seeded building `{}` through booking-api's admin API",
        demo::BUILDING
    ));

    let bay_manager = mint(secret, bay::MANAGER, Role::Manager, bay::BUILDING, None)?;
    let admin = Admin {
        client,
        api,
        token: &bay_manager,
    };
    admin
        .put(
            &format!("/v1/buildings/{}", bay::BUILDING),
            json!({
                "name": "Bay Towers",
                "timezone": demo::TIMEZONE.name(),
                "manager_emails": [bay::MANAGER_EMAIL],
                "double_booking_policy": "auto",
            }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/apartments/{}", bay::APARTMENT),
            json!({ "access_control_id": bay::ACCESS_LEVEL }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/facilities/{}", demo::FACILITY),
            json!({ "name": "Games room", "access_control_facility_id": demo::ZONE }),
        )
        .await?;
    admin
        .put(
            &format!("/v1/residents/{}", bay::RESIDENT),
            json!({
                "name": "Carla Resident",
                "email": "carla@bay.connecx.example",
                "apartment_id": bay::APARTMENT,
                "ipassan_person_id": bay::IPASSAN_PERSON,
            }),
        )
        .await?;
    let operator = Admin {
        client,
        api,
        token: &tokens.operator,
    };
    operator
        .put(
            &format!("/v1/buildings/{}/connections/ipassan", bay::BUILDING),
            json!({
                "base_url": format!("http://127.0.0.1:{ipassan_bay_port}"),
                "client_id": bay::IPASSAN_CLIENT_ID,
                "client_secret": bay::IPASSAN_CLIENT_SECRET,
                "site": bay::IPASSAN_SITE,
            }),
        )
        .await?;
    operator
        .put(
            &format!("/v1/buildings/{}/connections/salto", bay::BUILDING),
            json!({
                "url": format!("http://127.0.0.1:{salto_bay_port}/"),
                "auth_kind": "key",
                "key": bay::SHIP_KEY,
            }),
        )
        .await?;
    say(&format!(
        "seeded building `{}`, connected by an operator to its own iPassan tenant and Salto server",
        bay::BUILDING
    ));
    Ok(tokens)
}

/// booking-api's admin endpoints, called with a manager's token.
struct Admin<'a> {
    client: &'a reqwest::Client,
    api: &'a str,
    token: &'a str,
}

impl Admin<'_> {
    /// An error answer stops devstack with booking-api's problem document.
    async fn put(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let response = self
            .client
            .put(format!("{}{path}", self.api))
            .bearer_auth(self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("seeding the demo: PUT {path} failed"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let problem = response.text().await.unwrap_or_default();
        bail!("seeding the demo: PUT {path} with {body} answered {status}:\n{problem}")
    }
}

/// Tomorrow 18:00–20:00 in the building's time zone: a visit that is always in the future and
/// never crosses a DST change (those happen at night).
fn tomorrow_evening(now: DateTime<Utc>, zone: Tz) -> anyhow::Result<(DateTime<Tz>, DateTime<Tz>)> {
    let tomorrow = now
        .with_timezone(&zone)
        .date_naive()
        .checked_add_days(Days::new(1))
        .context("no tomorrow")?;
    let at = |hour| {
        tomorrow
            .and_hms_opt(hour, 0, 0)
            .and_then(|local| zone.from_local_datetime(&local).earliest())
            .with_context(|| format!("{tomorrow} {hour}:00 does not exist in {zone}"))
    };
    Ok((at(18)?, at(20)?))
}

/// A visitor booking as the API takes it, fields in the order a reader expects.
#[derive(Serialize)]
struct VisitorBookingRequest<'a> {
    visitor: Visitor<'a>,
    starts_at: String,
    ends_at: String,
    provide_access: bool,
}

#[derive(Serialize)]
struct Visitor<'a> {
    name: &'a str,
    email: &'a str,
}

fn print_demo(
    args: &Args,
    tokens: &DemoTokens,
    (starts_at, ends_at): (DateTime<Tz>, DateTime<Tz>),
) {
    let api = format!("http://127.0.0.1:{}", args.http_port);
    let booking = VisitorBookingRequest {
        visitor: Visitor {
            name: "Vera Visitor",
            email: "vera@visitor.example",
        },
        starts_at: starts_at.to_rfc3339(),
        ends_at: ends_at.to_rfc3339(),
        provide_access: true,
    };
    let booking = serde_json::to_string(&booking).unwrap_or_default();
    let rule = "═".repeat(78);
    println!(
        r#"
{rule}
connecX is running. Demo building `{building}` ({zone}), manager {manager_email}:
  apartment {apartment} (Salto access level {access_level}), facility {facility} (Salto zone {zone_id}),
  resident {alice} (iPassan person {person}) and resident {bob} (not synced to iPassan).

Book a visitor for tomorrow evening as {alice} (token valid for 30 days):

export CONNECX_TOKEN='{alice_token}'
curl -sS -w '\n' -X POST {api}/v1/visitor-bookings \
  -H "Authorization: Bearer $CONNECX_TOKEN" \
  -H 'Content-Type: application/json' -H 'Prefer: wait=5' \
  -d '{booking}'

The answer carries the visitor's PIN (access.status "granted"); both mails are on the mail page.
Try the PIN at the building's door (the simulator's clock: set it inside the visit first):

curl -sS -w '\n' -X POST http://127.0.0.1:{ipassan_port}/_sim/clock -H 'Content-Type: application/json' -d '{{"now":"{inside}"}}'
curl -sS -w '\n' -X POST http://127.0.0.1:{ipassan_port}/_sim/doors/{door}/pin -H 'Content-Type: application/json' -d '{{"site":"{site}","pin":"<PIN>"}}'

See it: all of {alice}'s visitor bookings, or the one with the "id" of that answer:

curl -sS -w '\n' {api}/v1/visitor-bookings -H "Authorization: Bearer $CONNECX_TOKEN"
curl -sS -w '\n' {api}/v1/visitor-bookings/<id> -H "Authorization: Bearer $CONNECX_TOKEN"

  Mails (mail sink):  http://127.0.0.1:{mail_port}/
  API docs:           {api}/docs
  RabbitMQ:           {amqp} (queues at http://127.0.0.1:15672/#/queues, guest/guest)
  {bob}'s token (his visitor bookings with access answer 422 resident_not_synced_to_ipassan):
    {bob_token}
  Manager token (admin PUTs, facility bookings):
    {manager_token}

A second building, `{bay}` (Bay Towers), is on its own iPassan tenant (port {ipassan_bay_port}) and
Salto server (port {salto_bay_port}, which wants a SHIP key), connected by an operator. Book the
same way as its resident {carla}:
  export CONNECX_BAY_TOKEN='{carla_token}'
and look at (or check) its connections as the operator — secrets are never shown:
  export CONNECX_OPERATOR_TOKEN='{operator_token}'
curl -sS -w '\n' {api}/v1/buildings/{bay}/connections/salto -H "Authorization: Bearer $CONNECX_OPERATOR_TOKEN"
curl -sS -w '\n' -X POST {api}/v1/buildings/{bay}/connections/salto/check -H "Authorization: Bearer $CONNECX_OPERATOR_TOKEN"
Ctrl-C stops everything.
{rule}
"#,
        building = demo::BUILDING,
        zone = demo::TIMEZONE.name(),
        manager_email = demo::MANAGER_EMAIL,
        apartment = demo::APARTMENT,
        access_level = demo::ACCESS_LEVEL,
        facility = demo::FACILITY,
        zone_id = demo::ZONE,
        alice = demo::SYNCED_RESIDENT,
        person = demo::IPASSAN_PERSON,
        bob = demo::UNSYNCED_RESIDENT,
        alice_token = tokens.synced_resident,
        bob_token = tokens.unsynced_resident,
        manager_token = tokens.manager,
        mail_port = args.mail_port,
        amqp = platform::config::redact_url(&args.amqp_url),
        ipassan_port = args.ipassan_port,
        inside = (starts_at + chrono::Duration::minutes(30)).to_rfc3339(),
        door = demo::IPASSAN_DOOR,
        site = demo::IPASSAN_SITE,
        bay = bay::BUILDING,
        carla = bay::RESIDENT,
        carla_token = tokens.bay_resident,
        operator_token = tokens.operator,
        ipassan_bay_port = args.ipassan_bay_port,
        salto_bay_port = args.salto_bay_port,
    );
}

// ── Supervising the children ───────────────────────────────────────────────────────────────

/// The children devstack started and what became of them.
struct Stack {
    children: Vec<RunningChild>,
    exits: mpsc::UnboundedReceiver<Exit>,
    /// Kept so `exits` never closes while devstack waits on it.
    exits_sender: mpsc::UnboundedSender<Exit>,
    grace: Duration,
}

struct RunningChild {
    name: &'static str,
    /// To the task that owns the process: signals to send its process group.
    signals: mpsc::UnboundedSender<Signal>,
    running: bool,
}

/// A child that stopped.
struct Exit {
    name: &'static str,
    status: std::io::Result<ExitStatus>,
}

impl Stack {
    fn new(grace: Duration) -> Self {
        let (exits_sender, exits) = mpsc::unbounded_channel();
        Self {
            children: Vec::new(),
            exits,
            exits_sender,
            grace,
        }
    }

    fn spawn(&mut self, bin_dir: &Path, spec: ChildSpec) -> anyhow::Result<()> {
        let program = bin_dir.join(spec.binary);
        let mut command = Command::new(&program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(key, value)| (key, value)));
        // Its own process group: the terminal's Ctrl-C goes to devstack alone, which then stops
        // the children in order; if devstack fails before stopping them, they go too.
        let (mut child, group) = spawn_in_own_group(&mut command, &program, spec.name)?;
        let label = label(spec.name, self.children.len());
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(stdout, label.clone(), Output::Stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, label, Output::Stderr));
        }

        let (signals, mut signal_requests) = mpsc::unbounded_channel();
        let exits = self.exits_sender.clone();
        let name = spec.name;
        // The task owns the process until it is reaped, so a signal never reaches a recycled pid.
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = signal_requests.recv() => {
                        // ESRCH: already gone, which is what we wanted.
                        let _ = killpg(group, signal);
                    }
                }
            };
            let _ = exits.send(Exit { name, status });
        });
        self.children.push(RunningChild {
            name,
            signals,
            running: true,
        });
        Ok(())
    }

    /// The next child to stop, for whatever reason.
    async fn next_exit(&mut self) -> Exit {
        let Some(exit) = self.exits.recv().await else {
            // Unreachable: `exits_sender` lives as long as `self`.
            return std::future::pending().await;
        };
        if let Some(child) = self.children.iter_mut().find(|c| c.name == exit.name) {
            child.running = false;
        }
        exit
    }

    /// Stops the services, then the mail sink: mails sent on the way out still arrive.
    async fn stop_all(&mut self) {
        self.stop(|name| name != MAIL_SINK).await;
        self.stop(|_| true).await;
    }

    /// SIGTERM to the chosen children still running; SIGKILL to those that outlive the grace
    /// period, or at once on a second Ctrl-C.
    async fn stop(&mut self, chosen: impl Fn(&str) -> bool) {
        let still_running = |stack: &Self| -> Vec<&'static str> {
            stack
                .children
                .iter()
                .filter(|c| c.running && chosen(c.name))
                .map(|c| c.name)
                .collect()
        };
        if still_running(self).is_empty() {
            return;
        }
        self.signal(&still_running(self), Signal::SIGTERM);
        let mut deadline = Instant::now() + self.grace;
        let mut killed = false;
        loop {
            let waiting = still_running(self);
            if waiting.is_empty() {
                return;
            }
            tokio::select! {
                exit = self.next_exit() => say(&format!("{} stopped ({})", exit.name, describe(&exit.status))),
                () = sleep_until(deadline), if !killed => {
                    say(&format!("{} still running after {} s: killing", waiting.join(", "), self.grace.as_secs()));
                    self.signal(&waiting, Signal::SIGKILL);
                    (killed, deadline) = (true, Instant::now());
                }
                () = stop_requested(), if !killed => {
                    say(&format!("killing {}", waiting.join(", ")));
                    self.signal(&waiting, Signal::SIGKILL);
                    (killed, deadline) = (true, Instant::now());
                }
            }
        }
    }

    fn signal(&self, names: &[&str], signal: Signal) {
        for child in self.children.iter().filter(|c| names.contains(&c.name)) {
            let _ = child.signals.send(signal);
        }
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot tell how: {error}"),
    }
}

// ── Output ─────────────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy)]
enum Output {
    Stdout,
    Stderr,
}

/// Copies a child's output line by line, each prefixed with the child's label. Bytes that are
/// not UTF-8 are shown replaced rather than dropping the line.
async fn forward_lines(stream: impl AsyncRead + Unpin, label: String, output: Output) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                // A closed terminal must not take devstack down with a panic.
                let _ = match output {
                    Output::Stdout => writeln!(std::io::stdout().lock(), "{label}{text}"),
                    Output::Stderr => writeln!(std::io::stderr().lock(), "{label}{text}"),
                };
            }
        }
    }
}

/// `   notifier │ ` in the child's colour.
fn label(name: &str, index: usize) -> String {
    const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 96];
    format!(
        "{}{name:>LABEL_WIDTH$} │{} ",
        Style::colour(COLOURS[index % COLOURS.len()]),
        Style::reset()
    )
}

/// devstack's own lines, labelled like a child's.
fn say(message: &str) {
    println!(
        "{}{:>LABEL_WIDTH$} │{} {message}",
        Style::colour(1),
        "devstack",
        Style::reset()
    );
}

/// ANSI colours, only when a person is watching.
struct Style;

impl Style {
    fn enabled() -> bool {
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    }

    fn colour(code: u8) -> String {
        if Self::enabled() {
            format!("\x1b[{code}m")
        } else {
            String::new()
        }
    }

    fn alert() -> String {
        Self::colour(31)
    }

    fn reset() -> &'static str {
        if Self::enabled() { "\x1b[0m" } else { "" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_visit_is_tomorrow_evening_in_the_buildings_time_zone() {
        // 23:30 UTC on 4 April is already 09:30 on 5 April in Sydney, hours after DST ended.
        let now = Utc.with_ymd_and_hms(2026, 4, 4, 23, 30, 0).unwrap();
        let (starts_at, ends_at) = tomorrow_evening(now, demo::TIMEZONE).unwrap();
        assert_eq!(starts_at.to_rfc3339(), "2026-04-06T18:00:00+10:00");
        assert_eq!(ends_at.to_rfc3339(), "2026-04-06T20:00:00+10:00");
    }

    #[test]
    fn a_demo_token_carries_the_claims_booking_api_reads() {
        let token = mint(
            DEV_JWT_SECRET,
            "res-alice",
            Role::Resident,
            "demo",
            Some("apt-101"),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["role"], "resident");
        assert_eq!(claims["building_id"], "demo");
        assert_eq!(claims["apartment_id"], "apt-101");
        let days_left = (claims["exp"].as_i64().unwrap() - Utc::now().timestamp()) / 86_400;
        assert!((29..=30).contains(&days_left), "{days_left}");
    }
}
