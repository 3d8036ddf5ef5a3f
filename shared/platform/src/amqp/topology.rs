//! Declares exchanges and queues (docs/architecture.md, "Messaging topology"). Every service declares what it uses at start;
//! declarations are idempotent, so replicas and restarts agree. `deploy/rabbitmq/definitions.json`
//! holds the same topology for ops.
//!
//! A service declares only what it uses, because it connects as a user allowed only that
//! (`contracts::broker_permissions`): the exchanges it publishes to, the queues it consumes with
//! their retry tiers, and the parking exchange and queue only with the queue that parks its
//! failures (the notifier's dead letters).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use contracts::{
    DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, PARKING_EXCHANGE, PARKING_QUEUE, QueueSpec,
    retry_queue_name,
};

use super::AmqpError;
use crate::config::RetryTiers;

/// The exchanges every service publishes to: events and dead letters.
pub async fn declare_exchanges(channel: &Channel) -> Result<(), AmqpError> {
    declare_exchange(channel, EVENTS_EXCHANGE, ExchangeKind::Topic).await?;
    declare_exchange(channel, DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout).await
}

/// The parking exchange and the queue that keeps what reaches it.
async fn declare_parking(channel: &Channel) -> Result<(), AmqpError> {
    declare_exchange(channel, PARKING_EXCHANGE, ExchangeKind::Fanout).await?;
    declare_quorum_queue(channel, PARKING_QUEUE, FieldTable::default()).await?;
    channel
        .queue_bind(
            PARKING_QUEUE.into(),
            PARKING_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::Topology)?;
    Ok(())
}

/// A consumer's queue with its bindings and its retry tiers.
pub async fn declare_consumer_queue(
    channel: &Channel,
    spec: &QueueSpec,
    tiers: &RetryTiers,
    delivery_limit: u32,
) -> Result<(), AmqpError> {
    declare_exchanges(channel).await?;
    if spec.dead_letter_exchange == PARKING_EXCHANGE {
        declare_parking(channel).await?;
    }
    let mut args = FieldTable::default();
    // The broker's own guard against a message that crashes its consumer over and over.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(delivery_limit)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        text(spec.dead_letter_exchange),
    );
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    declare_quorum_queue(channel, spec.name, args).await?;
    for binding in spec.bindings {
        channel
            .queue_bind(
                spec.name.into(),
                spec.exchange.into(),
                (*binding).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::Topology)?;
    }
    for (index, delay) in tiers.0.iter().enumerate() {
        let mut args = FieldTable::default();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        // Expired messages go back to the work queue through the default exchange.
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(spec.name));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        declare_quorum_queue(channel, &retry_queue_name(spec.name, index + 1), args).await?;
    }
    Ok(())
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(name.into(), kind, durable, FieldTable::default())
        .await
        .map_err(AmqpError::Topology)
}

async fn declare_quorum_queue(
    channel: &Channel,
    name: &str,
    mut args: FieldTable,
) -> Result<(), AmqpError> {
    args.insert("x-queue-type".into(), text("quorum"));
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(AmqpError::Topology)?;
    Ok(())
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
