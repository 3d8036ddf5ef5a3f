//! The audit's own view of the broker traffic: every event published to `connecx.events` and
//! every dead letter published to `connecx.dead`, copied into two durable quorum queues of the
//! run's vhost and read by a consumer that reconnects after every forced connection close (the
//! queues keep what arrives meanwhile). Bound only after the services declared their queues, so
//! the taps never make an event routable that no service would have received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use contracts::{DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Envelope, headers};

const EVENTS_TAP: &str = "soak.audit.events";
const DEAD_TAP: &str = "soak.audit.dead";

/// An event as published.
#[derive(Debug, Clone)]
pub struct TappedEvent {
    pub event_id: Uuid,
    pub routing_key: String,
    pub booking_id: Uuid,
    pub version: i64,
    /// When the tap saw it.
    pub seen_at: chrono::DateTime<chrono::Utc>,
}

/// A dead letter as published to `connecx.dead`.
#[derive(Debug, Clone)]
pub struct TappedDeadLetter {
    /// `x-dead-letter-id`, or for one the broker made itself, its message id and queue.
    pub key: String,
    pub dead_letter_id: Option<Uuid>,
    pub message_id: Option<String>,
    /// The queue that gave up.
    pub original_queue: String,
    pub error_kind: String,
    pub error: String,
    pub booking_id: Option<Uuid>,
}

#[derive(Default)]
struct Tapped {
    events: HashMap<Uuid, TappedEvent>,
    /// Messages on `connecx.events` that are not events (none are expected).
    foreign: usize,
    dead: HashMap<String, TappedDeadLetter>,
    reconnects: usize,
}

/// The running taps. Cheap to clone; clones share.
#[derive(Clone)]
pub struct AuditTap {
    tapped: Arc<Mutex<Tapped>>,
    url: String,
    stop: CancellationToken,
}

impl AuditTap {
    /// Declares and binds the tap queues, then reads them until [`AuditTap::stop`].
    pub async fn start(amqp_url: &str) -> anyhow::Result<AuditTap> {
        let tap = AuditTap {
            tapped: Arc::default(),
            url: amqp_url.to_owned(),
            stop: CancellationToken::new(),
        };
        let connection = tap.connect().await?;
        let channel = connection.create_channel().await?;
        declare(&channel).await?;
        let _ = connection.close(200, "bye".into()).await;
        let reader = tap.clone();
        tokio::spawn(async move { reader.run().await });
        Ok(tap)
    }

    fn tapped(&self) -> MutexGuard<'_, Tapped> {
        self.tapped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::connect(
            &self.url,
            ConnectionProperties::default().with_connection_name("soak-audit-tap".into()),
        )
        .await
        .context("the audit tap cannot reach RabbitMQ")
    }

    async fn run(self) {
        while !self.stop.is_cancelled() {
            if self.read_once().await.is_err() {
                if self.stop.is_cancelled() {
                    break;
                }
                self.tapped().reconnects += 1;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = self.stop.cancelled() => break,
                }
            }
        }
    }

    async fn read_once(&self) -> anyhow::Result<()> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        declare(&channel).await?;
        let consume = |queue: &'static str| {
            let channel = channel.clone();
            async move {
                channel
                    .basic_consume(
                        queue.into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
        };
        let mut events = consume(EVENTS_TAP).await?;
        let mut dead = consume(DEAD_TAP).await?;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = connection.close(200, "bye".into()).await;
                    return Ok(());
                }
                next = events.next() => {
                    let delivery = next.context("events tap closed")??;
                    self.record_event(&delivery.data);
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                next = dead.next() => {
                    let delivery = next.context("dead-letter tap closed")??;
                    let headers = platform::amqp::Headers::from_field_table(
                        delivery.properties.headers().as_ref(),
                    );
                    let message_id = delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned());
                    self.record_dead_letter(&headers, message_id, &delivery.data);
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
            }
        }
    }

    fn record_event(&self, body: &[u8]) {
        let mut tapped = self.tapped();
        match Envelope::from_json(body) {
            Ok(envelope) => {
                tapped.events.insert(
                    envelope.event_id,
                    TappedEvent {
                        event_id: envelope.event_id,
                        routing_key: envelope.routing_key().to_owned(),
                        booking_id: envelope.booking_id,
                        version: envelope.version,
                        seen_at: chrono::Utc::now(),
                    },
                );
            }
            Err(_) => tapped.foreign += 1,
        }
    }

    fn record_dead_letter(
        &self,
        h: &platform::amqp::Headers,
        message_id: Option<String>,
        body: &[u8],
    ) {
        let broker_queue = h
            .get_str(headers::BROKER_FIRST_DEATH_QUEUE)
            .map(str::to_owned);
        let original_queue = h
            .get_str(headers::ORIGINAL_QUEUE)
            .map(str::to_owned)
            .or_else(|| broker_queue.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let dead_letter_id = h
            .get_str(headers::DEAD_LETTER_ID)
            .and_then(|id| Uuid::parse_str(id).ok());
        let key = match dead_letter_id {
            Some(id) => id.to_string(),
            None => format!(
                "broker:{original_queue}:{}",
                message_id.as_deref().unwrap_or("")
            ),
        };
        let error_kind = h
            .get_str(headers::ERROR_KIND)
            .map(str::to_owned)
            .or_else(|| {
                h.get_str(headers::BROKER_FIRST_DEATH_REASON)
                    .map(|r| format!("broker:{r}"))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let letter = TappedDeadLetter {
            key: key.clone(),
            dead_letter_id,
            message_id,
            original_queue,
            error_kind,
            error: h.get_str(headers::ERROR).unwrap_or_default().to_owned(),
            booking_id: Envelope::from_json(body).ok().map(|e| e.booking_id),
        };
        self.tapped().dead.insert(key, letter);
    }

    /// Waits until both tap queues are read to the end (nothing ready for two looks in a row),
    /// then stops reading.
    pub async fn finish(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut empty_looks = 0;
        while empty_looks < 2 {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the audit tap could not read its queues to the end within {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            match self.ready_in_taps().await {
                Ok(0) => empty_looks += 1,
                _ => empty_looks = 0,
            }
        }
        self.stop.cancel();
        Ok(())
    }

    async fn ready_in_taps(&self) -> anyhow::Result<u32> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let mut ready = 0;
        for queue in [EVENTS_TAP, DEAD_TAP] {
            let declared = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            ready += declared.message_count();
        }
        let _ = connection.close(200, "bye".into()).await;
        Ok(ready)
    }

    pub fn events(&self) -> Vec<TappedEvent> {
        self.tapped().events.values().cloned().collect()
    }

    pub fn dead_letters(&self) -> Vec<TappedDeadLetter> {
        self.tapped().dead.values().cloned().collect()
    }

    pub fn foreign_messages(&self) -> usize {
        self.tapped().foreign
    }

    pub fn reconnects(&self) -> usize {
        self.tapped().reconnects
    }
}

async fn declare(channel: &lapin::Channel) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    for (queue, exchange, binding) in [
        (EVENTS_TAP, EVENTS_EXCHANGE, "#"),
        (DEAD_TAP, DEAD_LETTER_EXCHANGE, ""),
    ] {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Whether an event with `routing_key` reaches the consumer queue `queue` (the contracts'
/// bindings are `prefix.#` patterns or exact keys).
pub fn routes_to(queue: &contracts::QueueSpec, routing_key: &str) -> bool {
    queue.exchange == EVENTS_EXCHANGE
        && queue
            .bindings
            .iter()
            .any(|pattern| match pattern.strip_suffix(".#") {
                Some(prefix) => routing_key.starts_with(&format!("{prefix}.")),
                None => *pattern == "#" || *pattern == routing_key,
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_route_to_the_queues_bound_to_them() {
        assert!(routes_to(
            &contracts::IPASSAN_SYNC_QUEUE,
            "visitor_booking.created.v1"
        ));
        assert!(!routes_to(
            &contracts::SALTO_SYNC_QUEUE,
            "visitor_booking.created.v1"
        ));
        assert!(routes_to(
            &contracts::NOTIFIER_QUEUE,
            "facility_access.deferred.v1"
        ));
        assert!(!routes_to(
            &contracts::NOTIFIER_DEAD_LETTERS_QUEUE,
            "facility_access.deferred.v1"
        ));
    }
}
