//! The worker runtime (docs/architecture.md, "Messaging topology"): consume a queue, hand each message to the service's handler,
//! and act on the outcome — ack, retry through the tier queues, or dead-letter.
//!
//! A worker never loses a message: it acks only after the outcome is safely on the broker (the
//! retry or dead-letter publish was confirmed); if that publish fails the message is requeued.
//! When the connection drops, unacked messages return to the queue and the worker reconnects with
//! backoff, forever, until it is told to stop. Handlers must therefore be idempotent: a message may
//! be handled again after a crash or a lost ack.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use contracts::{DEAD_LETTER_EXCHANGE, Envelope, QueueSpec, headers, retry_queue_name};

use super::acks::{self, Settlement, Settler};
use super::publisher::{Outgoing, publish_confirmed};
use super::{AmqpError, Headers, connect, topology};
use crate::config::{AmqpSettings, RetryTiers};

/// What a handler says about a message it could not handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (a timeout, a 503, a dropped connection).
    #[error("transient: {0}")]
    Transient(String),
    /// Trying again cannot help (bad input, a refusal); a person must look.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The message is not something this worker can read at all (poison).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The outside system the message needs is known not to be able to take it now (its
    /// connection's breaker is open, it has too many calls in flight, its pool is full). The
    /// message waits through the retry tiers without using up its retry budget: nothing is
    /// wrong with the message, and an outage of any length must not turn it into a dead letter.
    #[error("waiting: {0}")]
    Unavailable(String),
}

/// One delivery, as handlers see it.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Vec<u8>,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub headers: Headers,
    /// How many times this message has been through a retry tier after a failure.
    pub retry_count: u32,
    /// How many times it waited in a retry tier because its system was unavailable.
    pub wait_count: u32,
    /// The broker has delivered this message before (a crash or a lost ack).
    pub redelivered: bool,
}

/// Handles raw messages (the dead-letter consumer, which must accept anything).
pub trait MessageHandler: Send + Sync + 'static {
    fn handle(&self, message: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once the worker gives `message` up, just before it becomes a dead letter: the
    /// place to tell whoever waits for an outcome that none is coming (a booking must not stay
    /// `pending` for ever). Best effort; by default nothing.
    fn gave_up(&self, message: &Message, error: &str) -> impl Future<Output = ()> + Send {
        let _ = (message, error);
        async {}
    }
}

/// Handles events; what most workers implement. Wrap it in [`Events`] to run it.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, envelope: Envelope) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// As [`MessageHandler::gave_up`], for a message that is a known event.
    fn gave_up(&self, envelope: &Envelope, error: &str) -> impl Future<Output = ()> + Send {
        let _ = (envelope, error);
        async {}
    }
}

/// Adapts an [`EventHandler`]: a body that is not a known event is permanent (a dead letter).
pub struct Events<H>(pub H);

impl<H: EventHandler> MessageHandler for Events<H> {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let envelope = Envelope::from_json(&message.body)
            .map_err(|e| HandlerError::Malformed(format!("not a known event ({e})")))?;
        self.0.handle(envelope).await
    }

    async fn gave_up(&self, message: &Message, error: &str) {
        if let Ok(envelope) = Envelope::from_json(&message.body) {
            self.0.gave_up(&envelope, error).await;
        }
    }
}

/// What to do with a message after its handler ran. A plain function of the outcome, the retry
/// count and the tiers, so the policy is tested without a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Republish to tier `tier` (1-based) and ack.
    Retry {
        tier: usize,
        error: String,
    },
    /// Republish to tier `tier` without counting a retry, and ack.
    Wait {
        tier: usize,
        error: String,
    },
    /// Publish to `connecx.dead` and ack.
    DeadLetter {
        kind: &'static str,
        error: String,
    },
}

/// The longest a waiting message waits between two looks: the longest tier not over this, so a
/// system that comes back is used again within about a minute, whatever the retry tiers. A
/// waiting message costs one cheap refusal per look.
pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn decide(
    outcome: &Result<(), HandlerError>,
    retry_count: u32,
    wait_count: u32,
    tiers: &RetryTiers,
) -> Disposition {
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(HandlerError::Unavailable(error)) => {
            let longest = tiers
                .0
                .iter()
                .rposition(|delay| *delay <= LONGEST_WAIT)
                .map_or(1, |index| index + 1);
            let tier = (wait_count as usize + 1).min(longest);
            if tiers.is_empty() {
                // No tiers configured: nothing may wait or retry here.
                return Disposition::DeadLetter {
                    kind: "transient_exhausted",
                    error: error.clone(),
                };
            }
            Disposition::Wait {
                tier,
                error: error.clone(),
            }
        }
        Err(HandlerError::Permanent(error)) => Disposition::DeadLetter {
            kind: "permanent",
            error: error.clone(),
        },
        Err(HandlerError::Malformed(error)) => Disposition::DeadLetter {
            kind: "malformed",
            error: error.clone(),
        },
        Err(HandlerError::Transient(error)) => {
            let next = retry_count as usize + 1;
            match tiers.delay_before(next) {
                Some(_) => Disposition::Retry {
                    tier: next,
                    error: error.clone(),
                },
                None => Disposition::DeadLetter {
                    kind: "transient_exhausted",
                    error: error.clone(),
                },
            }
        }
    }
}

/// Why a worker stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

/// Consumes one queue with one handler.
pub struct Worker<H> {
    queue: QueueSpec,
    amqp: AmqpSettings,
    tiers: RetryTiers,
    handler: Arc<H>,
    /// How long in-flight messages may take to finish at shutdown.
    drain_timeout: Duration,
    /// Whether the consumer is attached right now (for readiness).
    attached: crate::health::Attached,
}

impl<H: EventHandler> Worker<Events<H>> {
    /// A worker whose handler takes events.
    pub fn new(queue: QueueSpec, amqp: AmqpSettings, tiers: RetryTiers, handler: H) -> Self {
        Worker::for_messages(queue, amqp, tiers, Events(handler))
    }
}

impl<H: MessageHandler> Worker<H> {
    /// A worker whose handler takes raw messages.
    pub fn for_messages(
        queue: QueueSpec,
        amqp: AmqpSettings,
        tiers: RetryTiers,
        handler: H,
    ) -> Self {
        Self {
            queue,
            drain_timeout: Duration::from_secs(amqp.drain_timeout_secs),
            amqp,
            tiers,
            handler: Arc::new(handler),
            attached: crate::health::Attached::default(),
        }
    }

    /// Whether this worker's consumer is attached to its queue (for `/readyz`).
    pub fn attached(&self) -> crate::health::Attached {
        self.attached.clone()
    }

    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Consumes until `shutdown` is cancelled. Connection failures are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            match self.consume_once(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next();
                    tracing::warn!(queue = self.queue.name, %error, retry_in = ?delay, "broker link lost; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        tracing::info!(queue = self.queue.name, "worker stopped");
        Ok(())
    }

    /// One connection's life. `Ok` = stopped on request; `Err` = the link broke.
    async fn consume_once(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), AmqpError> {
        let connection = connect(&self.amqp, self.queue.name).await?;
        let consume_channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        topology::declare_consumer_queue(
            &consume_channel,
            &self.queue,
            &self.tiers,
            self.amqp.delivery_limit,
        )
        .await?;
        consume_channel
            .basic_qos(self.amqp.prefetch, BasicQosOptions::default())
            .await
            .map_err(AmqpError::Channel)?;
        let publish_channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::Channel)?;
        let mut consumer = consume_channel
            .basic_consume(
                self.queue.name.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::Channel)?;
        let consumer_tag = consumer.tag();
        tracing::info!(
            queue = self.queue.name,
            prefetch = self.amqp.prefetch,
            "consuming"
        );
        self.attached.set(true);
        backoff.reset();

        let (settler, settling) = acks::spawn(consume_channel.clone(), self.queue.name);
        let mut in_flight = JoinSet::new();
        let outcome = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        settler.delivered(delivery.delivery_tag);
                        let task = DeliveryTask {
                            queue: self.queue,
                            tiers: self.tiers.clone(),
                            handler: Arc::clone(&self.handler),
                            publish_channel: publish_channel.clone(),
                            settler: settler.clone(),
                        };
                        in_flight.spawn(task.run(delivery));
                    }
                    Some(Err(error)) => break Err(AmqpError::Channel(error)),
                    None => break Err(AmqpError::ConsumerClosed),
                },
            }
        };
        self.attached.set(false);
        if outcome.is_ok() {
            // Stop receiving, then let what we hold finish: acked work is done work.
            let _ = consume_channel
                .basic_cancel(consumer_tag, BasicCancelOptions::default())
                .await;
        }
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                queue = self.queue.name,
                left = in_flight.len(),
                "drain timed out; unfinished messages will be redelivered"
            );
            in_flight.abort_all();
            // Wait for the aborted tasks to be dropped, and their settlers with them.
            while in_flight.join_next().await.is_some() {}
        }
        // The last acks go out before the channel closes; what was not finished is redelivered.
        drop(settler);
        let _ = settling.await;
        close(&connection, &consume_channel, &publish_channel).await;
        outcome
    }
}

async fn close(connection: &Connection, consume: &Channel, publish: &Channel) {
    let _ = publish.close(200, "bye".into()).await;
    let _ = consume.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
}

/// Everything one delivered message needs, moved into the task that handles it.
struct DeliveryTask<H> {
    queue: QueueSpec,
    tiers: RetryTiers,
    handler: Arc<H>,
    publish_channel: Channel,
    settler: Settler,
}

impl<H: MessageHandler> DeliveryTask<H> {
    async fn run(self, delivery: Delivery) {
        let mut headers = Headers::from_field_table(delivery.properties.headers().as_ref());
        // The trace the message belongs to (a new one if it came without): the span shows it,
        // and whatever the handler publishes, retries and dead letters included, carries it on.
        let trace = headers
            .get_str(crate::trace::TRACEPARENT)
            .and_then(crate::trace::TraceId::from_traceparent)
            .unwrap_or_else(|| {
                let trace = crate::trace::TraceId::new();
                headers.set(crate::trace::TRACEPARENT, trace.to_traceparent());
                trace
            });
        let message = Message {
            body: delivery.data.clone(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            retry_count: headers
                .get_i64(headers::RETRY_COUNT)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            wait_count: headers
                .get_i64(headers::WAIT_COUNT)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            redelivered: delivery.redelivered,
            headers,
        };
        let span = tracing::info_span!(
            "message",
            queue = self.queue.name,
            routing_key = %message.routing_key,
            message_id = message.message_id.as_deref().unwrap_or(""),
            retry_count = message.retry_count,
            redelivered = message.redelivered,
            trace_id = %trace,
        );
        self.handle(delivery, message, trace).instrument(span).await;
    }

    async fn handle(self, delivery: Delivery, message: Message, trace: crate::trace::TraceId) {
        let started = Instant::now();
        // A panicking handler is our bug, not the message's: it becomes a dead letter with the
        // panic text instead of a crash loop. The handler runs inside this delivery's task (not a
        // task of its own), so a task aborted at the end of a shutdown's drain stops its
        // handler too, and the message goes back to the broker unacknowledged.
        let handling = crate::trace::in_trace(trace, self.handler.handle(&message));
        let outcome = match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => Err(HandlerError::Permanent(format!(
                "handler panicked: {}",
                panic_text(panic.as_ref())
            ))),
        };
        let disposition = decide(
            &outcome,
            message.retry_count,
            message.wait_count,
            &self.tiers,
        );
        let elapsed = started.elapsed();
        let labels = [("queue", self.queue.name.to_owned())];
        metrics::histogram!("connecx_handler_seconds", &labels).record(elapsed.as_secs_f64());
        let published = match &disposition {
            Disposition::Ack => {
                tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "handled");
                metrics::counter!("connecx_messages_handled_total", &labels).increment(1);
                Ok(())
            }
            Disposition::Retry { tier, error } => {
                tracing::warn!(tier, %error, "transient failure; retrying later");
                metrics::counter!("connecx_messages_retried_total", &labels).increment(1);
                self.publish_retry(&message, *tier, error, false).await
            }
            Disposition::Wait { tier, error } => {
                tracing::info!(tier, %error, "system unavailable; waiting without using a retry");
                metrics::counter!("connecx_messages_waited_total", &labels).increment(1);
                self.publish_retry(&message, *tier, error, true).await
            }
            Disposition::DeadLetter { kind, error } => {
                tracing::error!(kind, %error, "giving up; dead-lettering");
                self.handler.gave_up(&message, error).await;
                metrics::counter!(
                    "connecx_messages_dead_lettered_total",
                    &[
                        ("queue", self.queue.name.to_owned()),
                        ("kind", (*kind).to_owned())
                    ]
                )
                .increment(1);
                self.publish_dead_letter(&message, kind, error).await
            }
        };
        let settlement = match published {
            Ok(()) => Settlement::Ack,
            Err(error) => {
                // The outcome is not on the broker: hand the message back rather than lose it.
                tracing::error!(%error, "could not record the outcome; requeueing");
                Settlement::Requeue
            }
        };
        self.settler.finished(delivery.delivery_tag, settlement);
    }

    fn carried_headers(&self, message: &Message, error: &str) -> Headers {
        let mut out = message.headers.clone();
        if out.get_str(headers::FIRST_FAILED_AT).is_none() {
            out.set(headers::FIRST_FAILED_AT, Utc::now().to_rfc3339());
        }
        if out.get_str(headers::ORIGINAL_ROUTING_KEY).is_none() {
            out.set(headers::ORIGINAL_ROUTING_KEY, message.routing_key.clone());
        }
        out.set(headers::ERROR, truncate(error, 2000));
        out
    }

    /// Republishes to tier `tier`: as a retry (counted), or as a wait (the retry count stays).
    async fn publish_retry(
        &self,
        message: &Message,
        tier: usize,
        error: &str,
        wait: bool,
    ) -> Result<(), super::PublishError> {
        let mut headers = self.carried_headers(message, error);
        if wait {
            headers.set(
                headers::WAIT_COUNT,
                i64::from(message.wait_count.saturating_add(1)),
            );
        } else {
            headers.set(
                headers::RETRY_COUNT,
                i64::try_from(tier).unwrap_or(i64::MAX),
            );
        }
        let routing_key = retry_queue_name(self.queue.name, tier);
        publish_confirmed(
            &self.publish_channel,
            &[Outgoing {
                exchange: "",
                routing_key: &routing_key,
                body: &message.body,
                message_id: message.message_id.as_deref(),
                headers,
            }],
        )
        .await
    }

    async fn publish_dead_letter(
        &self,
        message: &Message,
        kind: &str,
        error: &str,
    ) -> Result<(), super::PublishError> {
        let mut headers = self.carried_headers(message, error);
        headers.set(headers::RETRY_COUNT, i64::from(message.retry_count));
        headers.set(headers::SERVICE, self.queue.name);
        headers.set(headers::ERROR_KIND, kind);
        headers.set(headers::ORIGINAL_QUEUE, self.queue.name);
        headers.set(headers::DEAD_LETTER_ID, uuid::Uuid::new_v4().to_string());
        let routing_key = headers
            .get_str(headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or_default()
            .to_owned();
        publish_confirmed(
            &self.publish_channel,
            &[Outgoing {
                exchange: dead_letter_exchange(&self.queue),
                routing_key: &routing_key,
                body: &message.body,
                message_id: message.message_id.as_deref(),
                headers,
            }],
        )
        .await
    }
}

/// Where this queue's dead letters go: the queue's own dead-letter exchange, so that the dead
/// letter consumer's failures park instead of looping back to itself.
fn dead_letter_exchange(queue: &QueueSpec) -> &'static str {
    if queue.dead_letter_exchange.is_empty() {
        DEAD_LETTER_EXCHANGE
    } else {
        queue.dead_letter_exchange
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Reconnection delays: 0.5 s doubling to 30 s.
struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            current: Duration::from_millis(500),
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(Duration::from_secs(30));
        delay
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> RetryTiers {
        "1s,2s".parse().unwrap()
    }

    #[test]
    fn success_is_acked() {
        assert_eq!(decide(&Ok(()), 0, 0, &tiers()), Disposition::Ack);
    }

    #[test]
    fn a_transient_failure_climbs_the_tiers_then_dead_letters() {
        let failure = Err(HandlerError::Transient("503".into()));
        assert_eq!(
            decide(&failure, 0, 0, &tiers()),
            Disposition::Retry {
                tier: 1,
                error: "503".into()
            }
        );
        assert_eq!(
            decide(&failure, 1, 0, &tiers()),
            Disposition::Retry {
                tier: 2,
                error: "503".into()
            }
        );
        assert_eq!(
            decide(&failure, 2, 0, &tiers()),
            Disposition::DeadLetter {
                kind: "transient_exhausted",
                error: "503".into()
            }
        );
    }

    #[test]
    fn a_permanent_failure_dead_letters_at_once() {
        let failure = Err(HandlerError::Permanent("403 site".into()));
        assert_eq!(
            decide(&failure, 0, 0, &tiers()),
            Disposition::DeadLetter {
                kind: "permanent",
                error: "403 site".into()
            }
        );
        let poison = Err(HandlerError::Malformed("x".into()));
        assert!(matches!(
            decide(&poison, 0, 0, &tiers()),
            Disposition::DeadLetter {
                kind: "malformed",
                ..
            }
        ));
    }

    #[test]
    fn with_no_tiers_a_transient_failure_is_a_dead_letter() {
        let none = RetryTiers(Vec::new());
        assert!(matches!(
            decide(&Err(HandlerError::Transient("x".into())), 0, 0, &none),
            Disposition::DeadLetter {
                kind: "transient_exhausted",
                ..
            }
        ));
    }

    #[test]
    fn an_unavailable_system_waits_through_the_tiers_without_using_up_the_retries() {
        let waiting = Err(HandlerError::Unavailable("breaker open".into()));
        assert_eq!(
            decide(&waiting, 1, 0, &tiers()),
            Disposition::Wait {
                tier: 1,
                error: "breaker open".into()
            }
        );
        // Climbs the tiers, then stays at the last one, however long the outage lasts.
        assert!(matches!(
            decide(&waiting, 2, 1, &tiers()),
            Disposition::Wait { tier: 2, .. }
        ));
        assert!(matches!(
            decide(&waiting, 2, 500, &tiers()),
            Disposition::Wait { tier: 2, .. }
        ));
        // But never in a tier longer than a minute.
        let production: RetryTiers = "10s,1m,5m,30m,2h".parse().unwrap();
        assert!(matches!(
            decide(&waiting, 0, 9, &production),
            Disposition::Wait { tier: 2, .. }
        ));
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
