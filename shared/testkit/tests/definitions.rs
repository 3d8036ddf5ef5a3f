//! `deploy/rabbitmq/definitions.json` stays the topology the services declare (docs/architecture.md, "Messaging topology").
//!
//! Four angles: the committed file is what the code generates (`devstack --print-definitions`);
//! its users are the services' own, with `contracts::broker_permissions`; what `platform`
//! declares on an empty broker, each service as its own user, is exactly the file's topology; and
//! services start, as the file's users, on a broker preloaded from the file — RabbitMQ refuses to
//! redeclare a queue with other arguments, so a drift there would stop every service at start in
//! production.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use contracts::{Service, broker_permissions};
use platform::amqp::topology::declare_consumer_queue;
use platform::config::{AmqpSettings, RetryTiers};
use serde_json::{Value, json};
use testkit::TestBroker;
use testkit::broker::url_as;
use testkit::rabbitmq_definitions::{default_definitions, default_delivery_limit, local_password};

const REGENERATE: &str =
    "cargo run -p tools --bin devstack -- --print-definitions > deploy/rabbitmq/definitions.json";

#[test]
fn the_committed_definitions_file_is_what_the_code_generates() {
    let differences = diff(&committed_definitions(), &default_definitions());
    assert!(
        differences.is_empty(),
        "deploy/rabbitmq/definitions.json differs from the code (- file, + code):\n{}\n\
         Regenerate it with:\n  {REGENERATE}",
        differences.join("\n")
    );
}

#[test]
fn the_files_users_are_the_services_own_with_their_broker_permissions() {
    let file = committed_definitions();
    let users: Vec<&str> = file["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        Service::ALL.map(Service::broker_user),
        "one user per service and no other (the administrator belongs to the deployment)"
    );
    for service in Service::ALL {
        let granted: Vec<&Value> = file["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["user"] == service.broker_user())
            .collect();
        let expected = broker_permissions(service);
        assert_eq!(
            granted,
            [&json!({
                "user": service.broker_user(),
                "vhost": "/",
                "configure": expected.configure,
                "write": expected.write,
                "read": expected.read,
            })],
            "{service}'s permissions in deploy/rabbitmq/definitions.json"
        );
    }
}

#[tokio::test]
async fn the_services_declare_exactly_the_topology_of_the_file() {
    let broker = TestBroker::create().await;

    declare_every_queue_as_the_services_do(&broker, |service| broker.url_for(service)).await;

    let differences = diff(
        &topology(&committed_definitions()),
        &broker_topology(&broker.vhost).await,
    );
    assert!(
        differences.is_empty(),
        "the topology platform declares differs from deploy/rabbitmq/definitions.json \
         (- file, + broker):\n{}",
        differences.join("\n")
    );
}

#[tokio::test]
async fn the_services_start_on_a_broker_loaded_from_the_file() {
    let broker = TestBroker::create().await;
    import_into_vhost(&committed_definitions(), &broker.vhost).await;

    // As the file's users, with the file's password hashes: refused with ACCESS_REFUSED if a
    // permission is missing, with PRECONDITION_FAILED if any argument the broker compares differs.
    declare_every_queue_as_the_services_do(&broker, |service| {
        url_as(&broker.url, service.broker_user(), &local_password(service))
    })
    .await;

    let differences = diff(
        &topology(&committed_definitions()),
        &broker_topology(&broker.vhost).await,
    );
    assert!(
        differences.is_empty(),
        "after loading the file and the services' declarations the broker holds (- file, + broker):\n{}",
        differences.join("\n")
    );
}

fn committed_definitions() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rabbitmq/definitions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nCreate it with:\n  {REGENERATE}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Each service, connected with `url_of(service)`, declares the queues it consumes.
async fn declare_every_queue_as_the_services_do(
    broker: &TestBroker,
    url_of: impl Fn(Service) -> String,
) {
    for service in Service::ALL {
        let settings = AmqpSettings {
            url: url_of(service),
            prefetch: 1,
            delivery_limit: default_delivery_limit(),
            drain_timeout_secs: 30,
        };
        let connection = platform::amqp::connect(&settings, "definitions test")
            .await
            .unwrap_or_else(|e| panic!("{service} connecting to {}: {e}", broker.vhost));
        for spec in service.consumes() {
            // A refused declaration closes the channel, so each queue gets its own.
            let channel = connection.create_channel().await.unwrap();
            declare_consumer_queue(
                &channel,
                spec,
                &RetryTiers::default(),
                settings.delivery_limit,
            )
            .await
            .unwrap_or_else(|e| panic!("declaring {} as {service} does: {e}", spec.name));
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// The file's topology sections only (what a broker's vhost can be compared with).
fn topology(definitions: &Value) -> Value {
    let mut topology = definitions.clone();
    if let Some(sections) = topology.as_object_mut() {
        sections.retain(|section, _| {
            ["vhosts", "exchanges", "queues", "bindings"].contains(&section.as_str())
        });
    }
    topology
}

/// One line per exchange, queue, binding and other section, for a readable set difference.
fn lines(definitions: &Value) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    let Some(sections) = definitions.as_object() else {
        lines.insert(format!("not a JSON object: {definitions}"));
        return lines;
    };
    for (section, content) in sections {
        match content.as_array() {
            Some(items) => lines.extend(
                items
                    .iter()
                    .map(|item| format!("{section}: {}", canonical(item))),
            ),
            None => {
                lines.insert(format!("{section} = {}", canonical(content)));
            }
        }
    }
    lines
}

/// `- ` lines only `expected` has, `+ ` lines only `actual` has.
fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let (expected, actual) = (lines(expected), lines(actual));
    let missing = expected.difference(&actual).map(|line| format!("- {line}"));
    let extra = actual.difference(&expected).map(|line| format!("+ {line}"));
    missing.chain(extra).collect()
}

/// JSON with object keys sorted, so equal documents print equally.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| format!("{}:{}", Value::from(key.as_str()), canonical(&map[key])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The management HTTP API, as `testkit::broker` uses it: `CONNECX_TEST_RABBITMQ_API`, default
/// `http://127.0.0.1:15672/api`, as guest.
async fn management(method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
    let base = std::env::var("CONNECX_TEST_RABBITMQ_API")
        .unwrap_or_else(|_| "http://127.0.0.1:15672/api".to_owned());
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{base}{path}"))
        .basic_auth("guest", Some("guest"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap_or_else(|e| {
        panic!(
            "the RabbitMQ management API is not reachable at {base} ({e}); enable it with \
             `rabbitmq-plugins enable rabbitmq_management`"
        )
    });
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "{method} {path} answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// `GET /api/<what>/<vhost>`: test vhost names need no escaping.
async fn list(what: &str, vhost: &str) -> Vec<Value> {
    match management(reqwest::Method::GET, &format!("/{what}/{vhost}"), None).await {
        Value::Array(items) => items,
        other => panic!("GET /{what}/{vhost} answered {other}"),
    }
}

/// What the broker holds in `vhost`, written as a definitions document for vhost `/` (the
/// broker's own `amq.*` exchanges and default-exchange bindings left out).
async fn broker_topology(vhost: &str) -> Value {
    let exchanges: Vec<Value> = list("exchanges", vhost)
        .await
        .into_iter()
        .filter(|x| {
            x["name"]
                .as_str()
                .is_some_and(|name| !name.is_empty() && !name.starts_with("amq."))
        })
        .map(|x| {
            json!({
                "name": x["name"], "vhost": "/", "type": x["type"], "durable": x["durable"],
                "auto_delete": x["auto_delete"], "internal": x["internal"],
                "arguments": x["arguments"],
            })
        })
        .collect();
    let queues: Vec<Value> = list("queues", vhost)
        .await
        .into_iter()
        .map(|q| {
            json!({
                "name": q["name"], "vhost": "/", "durable": q["durable"],
                "auto_delete": q["auto_delete"], "arguments": q["arguments"],
            })
        })
        .collect();
    let bindings: Vec<Value> = list("bindings", vhost)
        .await
        .into_iter()
        .filter(|b| b["source"] != "")
        .map(|b| {
            json!({
                "source": b["source"], "vhost": "/", "destination": b["destination"],
                "destination_type": b["destination_type"], "routing_key": b["routing_key"],
                "arguments": b["arguments"],
            })
        })
        .collect();
    json!({
        "vhosts": [{ "name": "/" }],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    })
}

/// Imports the file into `vhost` instead of `/`, as ops would load it: its topology into the
/// vhost, its users (global; the same passwords every test gives them) with their permissions on
/// the vhost.
async fn import_into_vhost(definitions: &Value, vhost: &str) {
    // The test vhost exists already, with the test user's permissions.
    let mut topology = topology(definitions);
    if let Some(sections) = topology.as_object_mut() {
        sections.remove("vhosts");
    }
    management(
        reqwest::Method::POST,
        &format!("/definitions/{vhost}"),
        Some(&topology),
    )
    .await;
    let mut permissions = definitions["permissions"].clone();
    for granted in permissions.as_array_mut().unwrap() {
        granted["vhost"] = json!(vhost);
    }
    let users = json!({ "users": definitions["users"], "permissions": permissions });
    management(reqwest::Method::POST, "/definitions", Some(&users)).await;
}
