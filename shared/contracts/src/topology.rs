//! Exchange, queue and header names (docs/architecture.md, "Messaging topology").
//!
//! Each consuming service owns one durable quorum queue bound to the routing keys it needs; retry
//! tiers and dead letters hang off that queue. The names live here, once, so that a service and
//! the ops definitions file cannot drift apart.

/// Topic exchange every booking and result event is published to (routing key = event type).
pub const EVENTS_EXCHANGE: &str = "connecx.events";

/// Fanout exchange for everything that could not be handled: dead letters published by a worker
/// and messages the broker itself dead-letters (delivery limit reached).
pub const DEAD_LETTER_EXCHANGE: &str = "connecx.dead";

/// Fanout exchange for dead letters the notifier itself could not store: a person reads them with
/// the management tools. Nothing is dropped even when the alerting path is broken.
pub const PARKING_EXCHANGE: &str = "connecx.parked";
/// The queue behind [`PARKING_EXCHANGE`]; nothing consumes it automatically.
pub const PARKING_QUEUE: &str = "connecx.parked";

/// A consumer's queue: its name and the routing keys bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: &'static str,
    /// The exchange the bindings are on.
    pub exchange: &'static str,
    pub bindings: &'static [&'static str],
    /// Where this queue's unhandled messages go.
    pub dead_letter_exchange: &'static str,
}

/// Visitor bookings → iPassan.
pub const IPASSAN_SYNC_QUEUE: QueueSpec = QueueSpec {
    name: "ipassan-sync",
    exchange: EVENTS_EXCHANGE,
    bindings: &["visitor_booking.#", "ipassan_connection.#"],
    dead_letter_exchange: DEAD_LETTER_EXCHANGE,
};

/// Facility bookings → Salto.
pub const SALTO_SYNC_QUEUE: QueueSpec = QueueSpec {
    name: "salto-sync",
    exchange: EVENTS_EXCHANGE,
    bindings: &["facility_booking.#", "salto_connection.#"],
    dead_letter_exchange: DEAD_LETTER_EXCHANGE,
};

/// Results, refused requests and the health of buildings' systems → emails to residents,
/// visitors, managers and ops.
pub const NOTIFIER_QUEUE: QueueSpec = QueueSpec {
    name: "notifier",
    exchange: EVENTS_EXCHANGE,
    bindings: &[
        "visitor_access.#",
        "facility_access.#",
        "facility_request.#",
        "visitor_request.#",
        "connection.#",
        "salto_server.#",
    ],
    dead_letter_exchange: DEAD_LETTER_EXCHANGE,
};

/// Dead letters → stored and mailed to the building's managers.
pub const NOTIFIER_DEAD_LETTERS_QUEUE: QueueSpec = QueueSpec {
    name: "notifier.dead-letters",
    exchange: DEAD_LETTER_EXCHANGE,
    bindings: &[""],
    // A dead letter that cannot even be stored must not loop back into connecx.dead.
    dead_letter_exchange: PARKING_EXCHANGE,
};

/// Results → booking state in booking-api.
pub const BOOKING_API_RESULTS_QUEUE: QueueSpec = QueueSpec {
    name: "booking-api.results",
    exchange: EVENTS_EXCHANGE,
    bindings: &["visitor_access.#", "facility_access.#"],
    dead_letter_exchange: DEAD_LETTER_EXCHANGE,
};

/// Every consumer queue of the system.
pub const ALL_QUEUES: [QueueSpec; 5] = [
    IPASSAN_SYNC_QUEUE,
    SALTO_SYNC_QUEUE,
    NOTIFIER_QUEUE,
    NOTIFIER_DEAD_LETTERS_QUEUE,
    BOOKING_API_RESULTS_QUEUE,
];

/// The retry tier queue `<queue>.retry.<n>` (n from 1).
pub fn retry_queue_name(queue: &str, tier: usize) -> String {
    format!("{queue}.retry.{tier}")
}

/// Headers the worker runtime reads and writes.
pub mod headers {
    /// How many times the message has been handed back for a retry (absent = 0).
    pub const RETRY_COUNT: &str = "x-retry-count";
    /// How many times the message waited for its outside system to be available again (absent
    /// = 0); waits do not count as retries.
    pub const WAIT_COUNT: &str = "x-wait-count";
    /// When the first attempt failed (RFC 3339), kept across retries.
    pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
    /// The service (queue) that gave up on a dead letter.
    pub const SERVICE: &str = "x-service";
    /// `transient_exhausted`, `permanent`, `malformed`, or the broker's reason.
    pub const ERROR_KIND: &str = "x-error-kind";
    /// The last error, in words.
    pub const ERROR: &str = "x-error";
    /// The queue a dead letter came from, so it can be replayed there.
    pub const ORIGINAL_QUEUE: &str = "x-original-queue";
    /// The routing key the message was first published with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// Unique id of one dead-lettering (a replayed message that fails again gets a new one).
    pub const DEAD_LETTER_ID: &str = "x-dead-letter-id";
    /// Set by the broker when it dead-letters (delivery limit, rejection).
    pub const BROKER_FIRST_DEATH_QUEUE: &str = "x-first-death-queue";
    pub const BROKER_FIRST_DEATH_REASON: &str = "x-first-death-reason";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_reaches_the_queues_meant_to_consume_it() {
        fn matches(pattern: &str, key: &str) -> bool {
            match pattern.strip_suffix(".#") {
                Some(prefix) => key.starts_with(&format!("{prefix}.")),
                None => pattern == key,
            }
        }
        let consumers_of = |key: &str| -> Vec<&str> {
            ALL_QUEUES
                .iter()
                .filter(|q| q.exchange == EVENTS_EXCHANGE)
                .filter(|q| q.bindings.iter().any(|p| matches(p, key)))
                .map(|q| q.name)
                .collect()
        };
        for key in crate::Event::ALL_TYPES {
            let consumers = consumers_of(key);
            if key.starts_with("visitor_booking.") || key.starts_with("ipassan_connection.") {
                assert_eq!(consumers, ["ipassan-sync"], "{key}");
            } else if key.starts_with("facility_booking.") || key.starts_with("salto_connection.") {
                assert_eq!(consumers, ["salto-sync"], "{key}");
            } else if key.starts_with("facility_request.")
                || key.starts_with("visitor_request.")
                || key.starts_with("connection.")
                || key.starts_with("salto_server.")
            {
                // Nothing was booked, or nothing about one booking: only people are told.
                assert_eq!(consumers, ["notifier"], "{key}");
            } else {
                assert_eq!(consumers, ["notifier", "booking-api.results"], "{key}");
            }
        }
    }

    #[test]
    fn retry_tiers_are_named_after_their_queue() {
        assert_eq!(retry_queue_name("salto-sync", 2), "salto-sync.retry.2");
    }
}
