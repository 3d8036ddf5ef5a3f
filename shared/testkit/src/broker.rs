//! A fresh RabbitMQ virtual host per test, on the machine's real broker.
//!
//! A vhost isolates a test's exchanges and queues completely, and lets a test cut only its own
//! connections (`rabbitmqctl close_all_connections -p <vhost>`) while other tests run beside it.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};

use contracts::{EVENTS_EXCHANGE, Envelope};

const PREFIX: &str = "connecx-test-";

/// A vhost that exists for one test.
#[derive(Debug, Clone)]
pub struct TestBroker {
    pub vhost: String,
    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`
    pub url: String,
}

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl ({e}); is RabbitMQ installed?"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn host() -> String {
    std::env::var("CONNECX_TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".to_owned())
}

impl TestBroker {
    pub async fn create() -> TestBroker {
        tokio::task::spawn_blocking(Self::create_blocking)
            .await
            .expect("vhost creation task")
    }

    fn create_blocking() -> TestBroker {
        static SWEPT: OnceLock<()> = OnceLock::new();
        if SWEPT.set(()).is_ok() {
            sweep_stale_vhosts();
        }
        let vhost = format!("{PREFIX}{}-{}", unix_now(), uuid::Uuid::new_v4().simple());
        let hint = "Start RabbitMQ with `rabbitmq-server -detached`.";
        rabbitmqctl(&["add_vhost", &vhost]).unwrap_or_else(|e| panic!("{e}\n{hint}"));
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"])
            .unwrap_or_else(|e| panic!("{e}\n{hint}"));
        let url = format!("amqp://guest:guest@{}/{vhost}", host());
        TestBroker { vhost, url }
    }

    /// Forcibly closes every client connection of this vhost, as a broker restart would.
    pub async fn close_connections(&self) {
        let vhost = self.vhost.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&[
                "close_all_connections",
                "-p",
                &vhost,
                "test: connection killed",
            ])
        })
        .await
        .expect("rabbitmqctl task")
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// How many client connections this vhost has now.
    pub async fn connection_count(&self) -> usize {
        let vhost = self.vhost.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["list_connections", "-q", "--no-table-headers", "vhost"])
                .map(|out| out.lines().filter(|l| l.trim() == vhost).count())
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0)
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name("test".into()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {} ({e}). Start it with `rabbitmq-server -detached`.",
                host()
            )
        })
    }

    /// Messages ready in `queue` (0 when it does not exist yet).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let connection = self.connect().await;
        let Ok(channel) = connection.create_channel().await else {
            return 0;
        };
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = connection.close(200, "bye".into()).await;
        depth
    }

    /// Waits until `queue` exists (a service declares its queues when it starts consuming).
    pub async fn wait_for_queue(&self, queue: &str, timeout: Duration) {
        let connection = self.connect().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let channel = connection.create_channel().await.expect("channel");
            let declared = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if declared.is_ok() {
                let _ = connection.close(200, "bye".into()).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue {queue} was not declared within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Observes what is published to `connecx.events` under `binding` (`#` for everything).
    pub async fn tap(&self, binding: &str) -> EventTap {
        self.tap_exchange(EVENTS_EXCHANGE, ExchangeKind::Topic, binding)
            .await
    }

    /// Observes a fanout or topic exchange (e.g. `connecx.dead`).
    pub async fn tap_exchange(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        binding: &str,
    ) -> EventTap {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare tap queue");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind tap queue");
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume tap queue");
        EventTap {
            _connection: connection,
            consumer,
        }
    }

    /// Publishes raw bytes to `connecx.events` (e.g. a poison message), waiting for the confirm.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        channel
            .exchange_declare(
                EVENTS_EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        channel
            .basic_publish(
                EVENTS_EXCHANGE.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let _ = connection.close(200, "bye".into()).await;
    }

    /// Publishes an event to `connecx.events`, as a producer service would.
    pub async fn publish_event(&self, envelope: &Envelope) {
        self.publish_raw(envelope.routing_key(), &envelope.to_json())
            .await;
    }
}

/// A message seen by a tap.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: platform::amqp::Headers,
}

/// A temporary queue bound to an exchange; it disappears with the tap.
pub struct EventTap {
    _connection: Connection,
    consumer: Consumer,
}

impl EventTap {
    /// The next message within `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Tapped> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        Some(Tapped {
            routing_key: delivery.routing_key.as_str().to_owned(),
            headers: platform::amqp::Headers::from_field_table(
                delivery.properties.headers().as_ref(),
            ),
            body: delivery.data,
        })
    }

    /// The next event within `timeout` (panics on a body that is not an event).
    pub async fn next(&mut self, timeout: Duration) -> Option<Envelope> {
        let message = self.next_message(timeout).await?;
        Some(Envelope::from_json(&message.body).unwrap_or_else(|e| {
            panic!(
                "tapped a message that is not an event ({e}): {}",
                String::from_utf8_lossy(&message.body)
            )
        }))
    }
}

/// Deletes test vhosts older than two hours (left behind by killed runs).
fn sweep_stale_vhosts() {
    let Ok(listing) = rabbitmqctl(&["list_vhosts", "-q", "--no-table-headers"]) else {
        return;
    };
    let cutoff = unix_now().saturating_sub(2 * 3600);
    for vhost in listing.lines().map(str::trim) {
        let created = vhost
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|ts| ts < cutoff) {
            let _ = rabbitmqctl(&["delete_vhost", vhost]);
        }
    }
}
