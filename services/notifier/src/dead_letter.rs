//! What a dead letter is, read from the message the broker or a worker put on `connecx.dead`.
//! Pure: the alert handler and the tests build [`DeadLetter`]s from messages without I/O.

use chrono::{DateTime, Utc};
use contracts::{Envelope, headers};
use platform::amqp::Message;
use serde_json::Value;
use uuid::Uuid;

/// A message that some service gave up on, with everything needed to explain and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: Uuid,
    pub failure: Failure,
    pub message_id: Option<String>,
    /// Present when the body is a known event.
    pub event: Option<Envelope>,
    pub headers: Value,
    pub body: Vec<u8>,
}

/// What a dead letter says about its failure: who gave up on it, where a replay sends it, why,
/// and after how many tries. Stored as columns of its own ([`crate::store::StoredDeadLetter`]).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Failure {
    /// The service (queue) that gave up.
    pub service: String,
    /// Where a replay sends it.
    pub original_queue: String,
    pub routing_key: String,
    /// `permanent`, `transient_exhausted`, `malformed`, or `broker:<reason>`.
    pub error_kind: String,
    pub error: String,
    pub retry_count: i64,
    pub first_failed_at: Option<DateTime<Utc>>,
}

impl Failure {
    /// How many times a handler tried: the first attempt plus one per retry tier.
    pub fn attempts(&self) -> i64 {
        self.retry_count + 1
    }
}

impl DeadLetter {
    pub fn from_message(message: &Message) -> Self {
        let h = &message.headers;
        // The broker dead-letters by itself (delivery limit): it says where and why in x-death.
        let broker_queue = h
            .get_str(headers::BROKER_FIRST_DEATH_QUEUE)
            .map(str::to_owned);
        let broker_reason = h
            .get_str(headers::BROKER_FIRST_DEATH_REASON)
            .map(str::to_owned);
        let service = h
            .get_str(headers::SERVICE)
            .map(str::to_owned)
            .or_else(|| broker_queue.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let original_queue = h
            .get_str(headers::ORIGINAL_QUEUE)
            .map(str::to_owned)
            .or(broker_queue)
            .unwrap_or_else(|| service.clone());
        let (error_kind, error) = match (h.get_str(headers::ERROR_KIND), broker_reason) {
            (Some(kind), _) => (
                kind.to_owned(),
                h.get_str(headers::ERROR)
                    .unwrap_or("no error text")
                    .to_owned(),
            ),
            (None, Some(reason)) => (
                format!("broker:{reason}"),
                broker_explanation(&reason, h.get_str(headers::ERROR)),
            ),
            (None, None) => (
                "unknown".to_owned(),
                "dead-lettered without a reason".to_owned(),
            ),
        };
        let routing_key = h
            .get_str(headers::ORIGINAL_ROUTING_KEY)
            .map(str::to_owned)
            .unwrap_or_else(|| message.routing_key.clone());
        let first_failed_at = h
            .get_str(headers::FIRST_FAILED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let id = h
            .get_str(headers::DEAD_LETTER_ID)
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_else(|| derived_id(message, &original_queue));
        Self {
            id,
            failure: Failure {
                service,
                original_queue,
                routing_key,
                error_kind,
                error,
                retry_count: h.get_i64(headers::RETRY_COUNT).unwrap_or(0),
                first_failed_at,
            },
            message_id: message.message_id.clone(),
            event: Envelope::from_json(&message.body).ok(),
            headers: Value::Object(h.0.clone()),
            body: message.body.clone(),
        }
    }

    pub fn booking_id(&self) -> Option<Uuid> {
        self.event.as_ref().map(|e| e.booking_id)
    }

    pub fn event_type(&self) -> Option<&'static str> {
        self.event.as_ref().map(Envelope::routing_key)
    }

    pub fn building_id(&self) -> Option<&str> {
        self.event.as_ref().and_then(Envelope::building_id)
    }

    /// The building the failed event belongs to, when the body is one and names it.
    pub fn building(&self) -> Option<&contracts::Building> {
        self.event.as_ref().and_then(Envelope::building)
    }
}

fn broker_explanation(reason: &str, last_error: Option<&str>) -> String {
    let what = match reason {
        "delivery_limit" => "the message was delivered too many times without being acknowledged \
                             (its consumer kept crashing or losing its connection)"
            .to_owned(),
        "expired" => "the message expired in its queue".to_owned(),
        "rejected" => "the consumer rejected the message".to_owned(),
        "maxlen" => "the queue was full".to_owned(),
        other => format!("the broker dead-lettered it ({other})"),
    };
    match last_error {
        Some(error) => format!("{what}; last error: {error}"),
        None => what,
    }
}

/// A stable id for a dead letter the broker made (no id header): the same redelivered message
/// maps to the same id, so it is stored and mailed once.
fn derived_id(message: &Message, queue: &str) -> Uuid {
    let deaths = message
        .headers
        .0
        .get("x-death")
        .map(Value::to_string)
        .unwrap_or_default();
    let mut key = Vec::with_capacity(message.body.len() + queue.len() + deaths.len() + 40);
    key.extend_from_slice(queue.as_bytes());
    key.extend_from_slice(message.message_id.as_deref().unwrap_or("").as_bytes());
    key.extend_from_slice(deaths.as_bytes());
    key.extend_from_slice(&message.body);
    Uuid::new_v5(&Uuid::NAMESPACE_OID, &key)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::message;

    #[test]
    fn a_worker_dead_letter_says_who_gave_up_and_why() {
        let id = Uuid::new_v4();
        let letter = DeadLetter::from_message(&message(
            json!({
                "x-service": "ipassan-sync", "x-original-queue": "ipassan-sync",
                "x-error-kind": "transient_exhausted", "x-error": "503 from iPassan",
                "x-retry-count": 5, "x-first-failed-at": "2026-11-23T10:00:00+00:00",
                "x-dead-letter-id": id.to_string(),
                "x-original-routing-key": "visitor_booking.created.v1"
            }),
            b"not an event",
        ));
        assert_eq!(letter.id, id);
        assert_eq!(letter.failure.service, "ipassan-sync");
        assert_eq!(letter.failure.error_kind, "transient_exhausted");
        assert_eq!(letter.failure.attempts(), 6);
        assert!(letter.failure.first_failed_at.is_some());
        assert_eq!(letter.event, None);
        assert_eq!(letter.building(), None);
    }

    #[test]
    fn a_broker_dead_letter_is_explained_and_gets_a_stable_id() {
        let headers = json!({
            "x-first-death-queue": "salto-sync", "x-first-death-reason": "delivery_limit",
            "x-death": [{"count": 1, "reason": "delivery_limit", "queue": "salto-sync"}]
        });
        let a = DeadLetter::from_message(&message(headers.clone(), b"{}"));
        let b = DeadLetter::from_message(&message(headers, b"{}"));
        assert_eq!(a.id, b.id, "a redelivered broker dead letter keeps its id");
        assert_eq!(a.failure.service, "salto-sync");
        assert_eq!(a.failure.original_queue, "salto-sync");
        assert_eq!(a.failure.error_kind, "broker:delivery_limit");
        assert!(a.failure.error.contains("delivered too many times"));
    }
}
