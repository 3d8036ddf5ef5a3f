//! What the services' own log lines prove, read from the JSON lines every replica writes
//! (`CONNECX__LOG__FORMAT=json`). The worker runtime logs `handled` once it has decided to ack a
//! message, inside a span naming the queue and the message id (= the event id): that is the
//! per-message proof the audit's "messages lost" count needs, and it survives a SIGKILL (the line
//! is in the pipe before the process dies). A message handled twice (redelivered after a crash)
//! is one entry.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

/// How many of a replica's last lines are kept, to show why it died.
const TAIL_LINES: usize = 40;

/// Everything learnt from the replicas' output. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct Evidence(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    /// (queue, message id) of every message some replica handled and acked.
    handled: HashSet<(String, String)>,
    /// (queue, message id) some replica dead-lettered.
    dead_lettered: HashSet<(String, String)>,
    /// ERROR lines per service.
    errors: BTreeMap<String, usize>,
    /// A few ERROR lines, for the report.
    error_samples: Vec<String>,
    /// Lines that were not JSON (a panic message, a start-up failure).
    plain: BTreeMap<String, usize>,
    tails: BTreeMap<String, VecDeque<String>>,
}

/// A summary of what the logs showed.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub errors: BTreeMap<String, usize>,
    pub error_samples: Vec<String>,
    pub plain_lines: BTreeMap<String, usize>,
}

impl Evidence {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one output line of `replica` (e.g. `salto-sync#2`) of `service`.
    pub fn ingest(&self, service: &str, replica: &str, line: &str) {
        let mut seen = self.seen();
        let tail = seen.tails.entry(replica.to_owned()).or_default();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
        let Ok(json) = serde_json::from_str::<Value>(line) else {
            if !line.trim().is_empty() {
                *seen.plain.entry(service.to_owned()).or_default() += 1;
            }
            return;
        };
        let message = json["message"].as_str().unwrap_or_default();
        let span = &json["span"];
        let key = || {
            Some((
                span["queue"].as_str()?.to_owned(),
                span["message_id"].as_str()?.to_owned(),
            ))
        };
        match message {
            "handled" => {
                if let Some(key) = key() {
                    seen.handled.insert(key);
                }
            }
            "giving up; dead-lettering" => {
                if let Some(key) = key() {
                    seen.dead_lettered.insert(key);
                }
            }
            _ => {}
        }
        if json["level"].as_str() == Some("ERROR") {
            *seen.errors.entry(service.to_owned()).or_default() += 1;
            if seen.error_samples.len() < 20 {
                let error = json["error"].as_str().unwrap_or_default();
                seen.error_samples
                    .push(format!("{replica}: {message} {error}").trim().to_owned());
            }
        }
    }

    /// Whether a replica consuming `queue` handled the message `message_id`.
    pub fn handled(&self, queue: &str, message_id: &str) -> bool {
        self.seen()
            .handled
            .contains(&(queue.to_owned(), message_id.to_owned()))
    }

    /// Whether a replica consuming `queue` dead-lettered `message_id` (a worker's own dead
    /// letter; the broker's show up only on `connecx.dead`).
    pub fn dead_lettered(&self, queue: &str, message_id: &str) -> bool {
        self.seen()
            .dead_lettered
            .contains(&(queue.to_owned(), message_id.to_owned()))
    }

    pub fn handled_count(&self) -> usize {
        self.seen().handled.len()
    }

    /// The last lines a replica wrote.
    pub fn tail(&self, replica: &str) -> Vec<String> {
        self.seen()
            .tails
            .get(replica)
            .map(|tail| tail.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn summary(&self) -> LogSummary {
        let seen = self.seen();
        LogSummary {
            errors: seen.errors.clone(),
            error_samples: seen.error_samples.clone(),
            plain_lines: seen.plain.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handled_line_is_proof_for_its_queue_and_message() {
        let evidence = Evidence::default();
        evidence.ingest(
            "notifier",
            "notifier#1",
            r#"{"timestamp":"t","level":"INFO","message":"handled","elapsed_ms":3,"target":"platform::amqp::worker","span":{"message_id":"e-1","queue":"notifier","name":"message"}}"#,
        );
        evidence.ingest("notifier", "notifier#1", "thread 'main' panicked at ...");
        evidence.ingest(
            "notifier",
            "notifier#1",
            r#"{"level":"ERROR","message":"giving up; dead-lettering","error":"smtp","span":{"message_id":"e-2","queue":"notifier"}}"#,
        );
        assert!(evidence.handled("notifier", "e-1"));
        assert!(!evidence.handled("booking-api.results", "e-1"));
        assert!(evidence.dead_lettered("notifier", "e-2"));
        let summary = evidence.summary();
        assert_eq!(summary.errors["notifier"], 1);
        assert_eq!(summary.plain_lines["notifier"], 1);
        assert_eq!(evidence.tail("notifier#1").len(), 3);
    }
}
