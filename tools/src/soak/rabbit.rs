//! The broker as the soak sees it from outside: the management HTTP API of the run's vhost (its
//! queues and depths, forcibly closing its client connections) and, for the standalone run only,
//! stopping and starting the whole local RabbitMQ application with `rabbitmqctl`.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// The management API for one vhost (`CONNECX_TEST_RABBITMQ_API`, default
/// `http://127.0.0.1:15672/api`, guest/guest as the tests use).
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    base: String,
    vhost: String,
}

/// One queue's counts as the management API last sampled them (every 5 s by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCounts {
    pub name: String,
    pub messages: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// Percent-encodes one path segment (vhost and connection names contain `/`, spaces, `>`).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Management {
    pub fn new(vhost: &str) -> Self {
        let base = std::env::var("CONNECX_TEST_RABBITMQ_API")
            .unwrap_or_else(|_| "http://127.0.0.1:15672/api".to_owned());
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            base,
            vhost: vhost.to_owned(),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .with_context(|| format!("the RabbitMQ management API does not answer at {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {url} answered {status}");
        }
        Ok(response.json().await?)
    }

    /// Every queue of the vhost with its counts.
    pub async fn queues(&self) -> anyhow::Result<Vec<QueueCounts>> {
        let listing = self
            .get(&format!(
                "/queues/{}?columns=name,messages,messages_unacknowledged,consumers",
                segment(&self.vhost)
            ))
            .await?;
        Ok(listing
            .as_array()
            .map(|queues| {
                queues
                    .iter()
                    .map(|q| QueueCounts {
                        name: q["name"].as_str().unwrap_or_default().to_owned(),
                        messages: q["messages"].as_u64().unwrap_or(0),
                        unacked: q["messages_unacknowledged"].as_u64().unwrap_or(0),
                        consumers: q["consumers"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Names of the vhost's client connections.
    pub async fn connection_names(&self) -> anyhow::Result<Vec<String>> {
        let listing = self
            .get(&format!("/vhosts/{}/connections", segment(&self.vhost)))
            .await?;
        Ok(listing
            .as_array()
            .map(|connections| {
                connections
                    .iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Forcibly closes every client connection of the vhost (as a broker restart would look to
    /// its clients); returns how many it closed. The API lists connections a moment late, so
    /// right after an earlier close this waits (up to 10 s) for the clients to be back.
    pub async fn close_connections(&self) -> anyhow::Result<usize> {
        let mut names = self.connection_names().await?;
        for _ in 0..20 {
            if names.len() > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            names = self.connection_names().await?;
        }
        let mut closed = 0;
        for name in names {
            let url = format!("{}/connections/{}", self.base, segment(&name));
            let answered = self
                .http
                .delete(&url)
                .basic_auth("guest", Some("guest"))
                .header("X-Reason", "soak: connection fault")
                .send()
                .await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                closed += 1;
            }
        }
        Ok(closed)
    }
}

/// Stops the local RabbitMQ application (the Erlang node stays up), as a broker outage. Every
/// vhost on the machine is affected: only for a standalone soak run.
pub async fn stop_app() -> anyhow::Result<()> {
    rabbitmqctl("stop_app").await
}

/// Starts it again and waits until AMQP clients are accepted.
pub async fn start_app() -> anyhow::Result<()> {
    rabbitmqctl("start_app").await?;
    for _ in 0..120 {
        if tokio::net::TcpStream::connect("127.0.0.1:5672")
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("RabbitMQ did not accept connections within 60 s of start_app")
}

async fn rabbitmqctl(command: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .arg(command)
        .output()
        .await
        .with_context(|| format!("cannot run `rabbitmqctl {command}` (is it on the PATH?)"))?;
    if !output.status.success() {
        bail!(
            "`rabbitmqctl {command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
