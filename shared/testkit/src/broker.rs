//! A fresh RabbitMQ virtual host per test, on the machine's real broker.
//!
//! A vhost isolates a test's exchanges and queues completely, and lets a test cut only its own
//! connections while other tests run beside it. Vhosts are made and removed through the
//! management HTTP API (`rabbitmq-plugins enable rabbitmq_management`): it answers in
//! milliseconds and any number of tests may call it at once, unlike `rabbitmqctl`, whose CLI nodes
//! exhaust their distribution ports when many tests start together. A vhost is deleted when its
//! test ends (and ones left by killed runs are swept), so quorum queues do not pile up.
//!
//! A service under test connects as its own user, allowed on the test's vhost only what it is
//! allowed in a deployment ([`TestBroker::url_for`], `contracts::broker_permissions`), so a test
//! fails where production would refuse. Test code that looks at or publishes to queues directly
//! uses the admin [`TestBroker::url`].

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};

use contracts::{EVENTS_EXCHANGE, Envelope, Service, broker_permissions};

const PREFIX: &str = "connecx-test-";

/// A vhost that exists for one test; deleted when dropped.
#[derive(Debug)]
pub struct TestBroker {
    pub vhost: String,
    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`
    pub url: String,
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

/// The management API: `CONNECX_TEST_RABBITMQ_API`, default `http://127.0.0.1:15672/api`.
fn api_base() -> String {
    std::env::var("CONNECX_TEST_RABBITMQ_API")
        .unwrap_or_else(|_| "http://127.0.0.1:15672/api".to_owned())
}

/// Percent-encodes one path segment (vhost and connection names contain `/`, spaces, `>`).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One call to the management API as guest (blocking; also used from `Drop`).
fn management(method: &str, path: &str, body: Option<serde_json::Value>) -> Result<String, String> {
    management_as(("guest", "guest"), method, path, body)
}

/// One call to the management API as `(user, password)`.
fn management_as(
    (user, password): (&str, &str),
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<String, String> {
    use base64::Engine as _;
    let url = format!("{}{path}", api_base());
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build(),
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let auth = auth.as_str();
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", auth).call(),
        (_, Some(body)) => agent
            .put(&url)
            .header("Authorization", auth)
            .send_json(body),
        (_, None) => agent.put(&url).header("Authorization", auth).send_empty(),
    };
    let mut response = response.map_err(|e| {
        format!(
            "the RabbitMQ management API is not reachable at {url} ({e}). Start RabbitMQ with \
             `rabbitmq-server -detached` and enable the API with \
             `rabbitmq-plugins enable rabbitmq_management`."
        )
    })?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    if (200..300).contains(&status) || (method == "DELETE" && status == 404) {
        Ok(text)
    } else {
        Err(format!("{method} {url} answered {status}: {text}"))
    }
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
        let path = segment(&vhost);
        management("PUT", &format!("/vhosts/{path}"), None).unwrap_or_else(|e| panic!("{e}"));
        management(
            "PUT",
            &format!("/permissions/{path}/guest"),
            Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("amqp://guest:guest@{}/{path}", host());
        TestBroker { vhost, url }
    }

    /// The URL `service` connects with: as its own user (`connecx-<service>`), allowed on this
    /// vhost exactly what `contracts::broker_permissions` allows it. The user is made (or its
    /// password set again) through the management API; that is idempotent, so tests running at
    /// once in many processes may all ask for the same user.
    pub fn url_for(&self, service: Service) -> String {
        grant_service_user(&self.url, service).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Forcibly closes every client connection of this vhost, as a broker restart would, and
    /// says how many it closed. The management API lists a new connection a moment late, so this
    /// waits (up to 10 s) until there is at least one to close.
    pub async fn close_connections(&self) -> usize {
        let vhost = segment(&self.vhost);
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut names = connection_names(&vhost);
            while names.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                names = connection_names(&vhost);
            }
            names
                .iter()
                .filter(|name| {
                    management("DELETE", &format!("/connections/{}", segment(name)), None).is_ok()
                })
                .count()
        })
        .await
        .expect("close connections task")
    }

    /// How many client connections this vhost has now.
    pub async fn connection_count(&self) -> usize {
        let vhost = segment(&self.vhost);
        tokio::task::spawn_blocking(move || connection_names(&vhost).len())
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

    /// Waits until `queue` has a consumer: its worker has declared and bound it and is taking
    /// messages. A queue that merely exists may not be bound yet, and an event published then is
    /// unroutable, so tests wait for this rather than for the queue.
    pub async fn wait_for_consumer(&self, queue: &str, timeout: Duration) {
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
            if declared.is_ok_and(|q| q.consumer_count() > 0) {
                let _ = connection.close(200, "bye".into()).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue {queue} had no consumer within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Declares a consumer queue exactly as its worker would, without consuming it.
    pub async fn declare_queue(&self, spec: &contracts::QueueSpec, delivery_limit: u32) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        platform::amqp::topology::declare_consumer_queue(
            &channel,
            spec,
            &platform::config::RetryTiers::default(),
            delivery_limit,
        )
        .await
        .expect("declare the queue");
        let _ = connection.close(200, "bye".into()).await;
    }

    /// Plays a consumer that crashes on every delivery from `queue` (the message goes back to the
    /// queue unacknowledged), until nothing is delivered for a second: the broker's delivery limit
    /// then dead-letters the message by itself. Returns how many deliveries it saw.
    pub async fn crash_loop(&self, queue: &str) -> usize {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut deliveries = 0;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
        {
            deliveries += 1;
            let _ = delivery
                .acker
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
        let _ = connection.close(200, "bye".into()).await;
        deliveries
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

    /// Publishes many events on one connection, in order, waiting for every confirm.
    pub async fn publish_events(&self, envelopes: &[Envelope]) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let mut confirms = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let confirm = channel
                .basic_publish(
                    EVENTS_EXCHANGE.into(),
                    envelope.routing_key().into(),
                    BasicPublishOptions::default(),
                    &envelope.to_json(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirm.await.expect("confirm");
        }
        let _ = connection.close(200, "bye".into()).await;
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

/// Makes `service`'s user, with its local password
/// ([`crate::rabbitmq_definitions::local_password`]), and gives it its permissions on the vhost
/// of `admin_url`, through the management API as the user of `admin_url` (an administrator).
/// Returns the URL the service connects with. Every step is an idempotent `PUT`.
pub fn grant_service_user(admin_url: &str, service: Service) -> Result<String, String> {
    let admin: lapin::uri::AMQPUri = admin_url
        .parse()
        .map_err(|e| format!("`{admin_url}` is not an AMQP URL: {e}"))?;
    let credentials = (
        admin.authority.userinfo.username.as_str(),
        admin.authority.userinfo.password.as_str(),
    );
    let user = service.broker_user();
    let password = crate::rabbitmq_definitions::local_password(service);
    put_user(credentials, user, &password)?;
    let permissions = broker_permissions(service);
    management_as(
        credentials,
        "PUT",
        &format!("/permissions/{}/{}", segment(&admin.vhost), segment(user)),
        Some(serde_json::json!({
            "configure": permissions.configure,
            "write": permissions.write,
            "read": permissions.read,
        })),
    )?;
    Ok(url_as(admin_url, user, &password))
}

/// Makes `user` with `password` and no tags, or sets them again.
fn put_user(credentials: (&str, &str), user: &str, password: &str) -> Result<(), String> {
    // Two first creations at once: RabbitMQ answers one of them 400 (the user exists by then);
    // the next try updates it.
    let mut tries = 0;
    while let Err(error) = management_as(
        credentials,
        "PUT",
        &format!("/users/{}", segment(user)),
        Some(serde_json::json!({ "password": password, "tags": "" })),
    ) {
        tries += 1;
        if tries == 5 {
            return Err(error);
        }
        std::thread::sleep(Duration::from_millis(50 * tries));
    }
    Ok(())
}

/// `amqp_url` with `user` and `password` in place of its own.
pub fn url_as(amqp_url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = amqp_url.split_once("://").unwrap_or(("amqp", amqp_url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    format!(
        "{scheme}://{}:{}@{}",
        segment(user),
        segment(password),
        &rest[host_start..]
    )
}

/// `amqp_url` (e.g. through a test's proxy) with the user and password of `own_url` (a
/// [`TestBroker::url_for`]).
pub fn with_credentials_of(amqp_url: &str, own_url: &str) -> String {
    match own_url.parse::<lapin::uri::AMQPUri>() {
        Ok(own) => url_as(
            amqp_url,
            &own.authority.userinfo.username,
            &own.authority.userinfo.password,
        ),
        Err(_) => amqp_url.to_owned(),
    }
}

/// Names of the client connections of a vhost (the management API lists them a few seconds late
/// at most; callers poll).
fn connection_names(vhost_segment: &str) -> Vec<String> {
    management("GET", &format!("/vhosts/{vhost_segment}/connections"), None)
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<serde_json::Value>>(&text).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // Blocking is fine here: tests end right after, and a leftover vhost costs the broker
        // memory and start-up time for as long as it exists.
        let path = format!("/vhosts/{}", segment(&self.vhost));
        let _ = std::thread::spawn(move || management("DELETE", &path, None)).join();
    }
}

/// Deletes test vhosts older than an hour (left behind by killed runs).
fn sweep_stale_vhosts() {
    let Ok(listing) = management("GET", "/vhosts?columns=name", None) else {
        return;
    };
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&listing)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let cutoff = unix_now().saturating_sub(3600);
    for vhost in names {
        let created = vhost
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|ts| ts < cutoff) {
            let _ = management("DELETE", &format!("/vhosts/{}", segment(&vhost)), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_tests_making_the_same_user_at_once_all_get_it() {
        let user = format!("connecx-test-probe-{}", uuid::Uuid::new_v4().simple());
        let makers: Vec<_> = (0..32)
            .map(|_| {
                let user = user.clone();
                std::thread::spawn(move || put_user(("guest", "guest"), &user, "probe"))
            })
            .collect();
        let results: Vec<Result<(), String>> =
            makers.into_iter().map(|t| t.join().unwrap()).collect();
        let _ = management("DELETE", &format!("/users/{}", segment(&user)), None);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    #[test]
    fn a_url_as_another_user_keeps_host_vhost_and_options() {
        assert_eq!(
            url_as(
                "amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=8192",
                "connecx-notifier",
                "p@ss"
            ),
            "amqp://connecx-notifier:p%40ss@127.0.0.1:5672/%2f?frame_max=8192"
        );
        assert_eq!(
            url_as("amqp://rabbitmq/connecx-test-1", "u", "p"),
            "amqp://u:p@rabbitmq/connecx-test-1"
        );
        assert_eq!(
            with_credentials_of(
                "amqp://guest:guest@127.0.0.1:40123/connecx-test-1",
                "amqp://connecx-booking-api:booking-api-local-only@127.0.0.1:5672/connecx-test-1"
            ),
            "amqp://connecx-booking-api:booking-api-local-only@127.0.0.1:40123/connecx-test-1"
        );
    }
}
