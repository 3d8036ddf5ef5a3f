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
//! Besides the topology and the vhost, the file holds each service's user (`connecx-<service>`)
//! with its permissions on the vhost (`contracts::broker_permissions`), so a broker loaded from it
//! lets every service do its part and nothing more. Their passwords are [`local_password`]s, for
//! a broker on one's own machine only: a deployment sets its own (README, Runbook). The
//! administrator ops log in as is not in the file: it belongs to the deployment
//! (`compose-users.json` for docker compose).

use base64::Engine as _;
use contracts::{
    ALL_QUEUES, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, PARKING_EXCHANGE, PARKING_QUEUE, QueueSpec,
    Service, broker_permissions, retry_queue_name,
};
use platform::config::{AmqpSettings, RetryTiers};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

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
        "users": Service::ALL.map(user),
        "vhosts": [{ "name": VHOST }],
        "permissions": Service::ALL.map(permissions),
        "exchanges": [
            exchange(EVENTS_EXCHANGE, "topic"),
            exchange(DEAD_LETTER_EXCHANGE, "fanout"),
            exchange(PARKING_EXCHANGE, "fanout"),
        ],
        "queues": queues,
        "bindings": bindings,
    })
}

/// The password `service`'s user has on a local broker: in the definitions file (which docker
/// compose loads), under devstack and in the tests. Known to everyone, so never for a shared
/// broker.
pub fn local_password(service: Service) -> String {
    format!("{}-local-only", service.name())
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of a 4-byte salt followed by
/// SHA-256(salt ‖ password).
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&digest);
    base64::engine::general_purpose::STANDARD.encode(salted)
}

/// `service`'s user with its local password, salted from its name so the file stays the same
/// from one generation to the next. No tags: no management UI, only AMQP.
fn user(service: Service) -> Value {
    let name = service.broker_user();
    let digest = Sha256::digest(name.as_bytes());
    let salt = [digest[0], digest[1], digest[2], digest[3]];
    json!({
        "name": name,
        "password_hash": password_hash(&local_password(service), salt),
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
    })
}

fn permissions(service: Service) -> Value {
    let permissions = broker_permissions(service);
    json!({
        "user": service.broker_user(),
        "vhost": VHOST,
        "configure": permissions.configure,
        "write": permissions.write,
        "read": permissions.read,
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
    fn a_password_hash_is_what_rabbitmq_computes() {
        // `rabbitmqctl hash_password` style: base64(salt ‖ sha256(salt ‖ password)), checked
        // against a hash RabbitMQ made for guest/guest.
        let hash = "/BZjZh+7G80QZDtbuajW/vJBIRcq/JrtnPIfDPUeNaJEgKY4";
        let salted = base64::engine::general_purpose::STANDARD
            .decode(hash)
            .unwrap();
        let salt = [salted[0], salted[1], salted[2], salted[3]];
        assert_eq!(password_hash("guest", salt), hash);
    }

    #[test]
    fn every_service_has_its_user_and_its_permissions_on_the_vhost() {
        let definitions = default_definitions();
        for service in Service::ALL {
            let user = definitions["users"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["name"] == service.broker_user())
                .unwrap_or_else(|| panic!("no user for {service}"));
            assert_eq!(user["tags"], json!([]), "{service} is no administrator");
            let granted = definitions["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["user"] == service.broker_user())
                .unwrap_or_else(|| panic!("no permissions for {service}"));
            let expected = broker_permissions(service);
            assert_eq!(granted["vhost"], VHOST);
            assert_eq!(granted["configure"], expected.configure, "{service}");
            assert_eq!(granted["write"], expected.write, "{service}");
            assert_eq!(granted["read"], expected.read, "{service}");
        }
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
