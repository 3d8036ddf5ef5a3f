//! The RabbitMQ topology of docs/architecture.md, "Messaging topology" as a definitions document, for ops.
//!
//! Every service declares its exchanges and queues at start (`platform::amqp::topology`); ops also
//! want the same topology as a file they can load into a broker before any service runs
//! (`deploy/rabbitmq/definitions.json`, loaded at boot with `load_definitions` or imported with
//! `rabbitmqctl import_definitions`). This module writes that file from the same names
//! (`contracts`) and the same defaults (`platform::config`), and `devstack --print-definitions`
//! prints it. `tests/definitions.rs` keeps the committed file equal to it and checks, on a real
//! broker, that the services' own declarations agree with it argument for argument — a queue
//! redeclared with different arguments is refused by the broker, so a drift would stop a service.
//!
//! Only topology and the vhost are described: users and permissions belong to the deployment.

use contracts::{
    ALL_QUEUES, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, PARKING_EXCHANGE, PARKING_QUEUE, QueueSpec,
    retry_queue_name,
};
use platform::config::{AmqpSettings, RetryTiers};
use serde_json::{Map, Value, json};

/// The vhost the services use by default (`amqp://…/%2f`).
pub const VHOST: &str = "/";

/// The definitions for the services' default settings: the default retry tiers and the default
/// delivery limit (`CONNECX__RETRY__TIERS`, `CONNECX__AMQP__DELIVERY_LIMIT` unset).
pub fn default_definitions() -> Value {
    definitions(&RetryTiers::default(), default_delivery_limit())
}

/// The broker-side crash-loop guard a service uses when `CONNECX__AMQP__DELIVERY_LIMIT` is unset.
pub fn default_delivery_limit() -> u32 {
    // Read through serde so the number is platform's own default, not a copy of it.
    serde_json::from_value::<AmqpSettings>(json!({ "url": "amqp://localhost" }))
        .map(|settings| settings.delivery_limit)
        .unwrap_or(5)
}

/// The definitions for a deployment whose services run with these tiers and delivery limit.
pub fn definitions(tiers: &RetryTiers, delivery_limit: u32) -> Value {
    let mut queues = vec![queue(PARKING_QUEUE, Map::new())];
    let mut bindings = vec![binding(PARKING_EXCHANGE, PARKING_QUEUE, "")];
    for spec in &ALL_QUEUES {
        queues.push(queue(
            spec.name,
            consumer_queue_arguments(spec, delivery_limit),
        ));
        queues.extend(retry_tier_queues(spec, tiers));
        bindings.extend(
            spec.bindings
                .iter()
                .map(|key| binding(spec.exchange, spec.name, key)),
        );
    }
    json!({
        "vhosts": [{ "name": VHOST }],
        "exchanges": [
            exchange(EVENTS_EXCHANGE, "topic"),
            exchange(DEAD_LETTER_EXCHANGE, "fanout"),
            exchange(PARKING_EXCHANGE, "fanout"),
        ],
        "queues": queues,
        "bindings": bindings,
    })
}

/// As `platform::amqp::topology::declare_consumer_queue` declares the work queue.
fn consumer_queue_arguments(spec: &QueueSpec, delivery_limit: u32) -> Map<String, Value> {
    let mut arguments = Map::new();
    arguments.insert("x-delivery-limit".into(), json!(delivery_limit));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        json!(spec.dead_letter_exchange),
    );
    arguments.insert("x-dead-letter-strategy".into(), json!("at-least-once"));
    arguments.insert("x-overflow".into(), json!("reject-publish"));
    arguments
}

/// `<queue>.retry.<n>`: a message waits out the tier's TTL, then the broker dead-letters it back
/// to `<queue>` through the default exchange.
fn retry_tier_queues<'a>(
    spec: &'a QueueSpec,
    tiers: &'a RetryTiers,
) -> impl Iterator<Item = Value> + 'a {
    tiers.0.iter().enumerate().map(|(index, delay)| {
        let mut arguments = Map::new();
        let ttl_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        arguments.insert("x-message-ttl".into(), json!(ttl_ms));
        arguments.insert("x-dead-letter-exchange".into(), json!(""));
        arguments.insert("x-dead-letter-routing-key".into(), json!(spec.name));
        arguments.insert("x-dead-letter-strategy".into(), json!("at-least-once"));
        arguments.insert("x-overflow".into(), json!("reject-publish"));
        queue(&retry_queue_name(spec.name, index + 1), arguments)
    })
}

/// Every queue of the system is a durable quorum queue.
fn queue(name: &str, mut arguments: Map<String, Value>) -> Value {
    arguments.insert("x-queue-type".into(), json!("quorum"));
    json!({
        "name": name,
        "vhost": VHOST,
        "durable": true,
        "auto_delete": false,
        "arguments": arguments,
    })
}

fn exchange(name: &str, kind: &str) -> Value {
    json!({
        "name": name,
        "vhost": VHOST,
        "type": kind,
        "durable": true,
        "auto_delete": false,
        "internal": false,
        "arguments": {},
    })
}

fn binding(exchange: &str, queue: &str, routing_key: &str) -> Value {
    json!({
        "source": exchange,
        "vhost": VHOST,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_queue_has_one_retry_queue_per_tier_dead_lettering_back_to_it() {
        let definitions = default_definitions();
        let queues = definitions["queues"].as_array().unwrap();
        let tier = |name: &str| {
            queues
                .iter()
                .find(|q| q["name"] == name)
                .unwrap_or_else(|| panic!("no queue {name}"))["arguments"]
                .clone()
        };
        assert_eq!(tier("salto-sync.retry.1")["x-message-ttl"], 10_000);
        assert_eq!(tier("salto-sync.retry.5")["x-message-ttl"], 7_200_000);
        assert_eq!(
            tier("salto-sync.retry.5")["x-dead-letter-routing-key"],
            "salto-sync"
        );
        assert!(queues.iter().all(|q| q["name"] != "salto-sync.retry.6"));
        assert_eq!(queues.len(), 1 + ALL_QUEUES.len() * 6);
    }

    #[test]
    fn dead_letters_the_notifier_cannot_store_are_parked_not_looped() {
        let definitions = default_definitions();
        let dead_letters = definitions["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "notifier.dead-letters")
            .unwrap();
        assert_eq!(
            dead_letters["arguments"]["x-dead-letter-exchange"],
            "connecx.parked"
        );
    }
}
