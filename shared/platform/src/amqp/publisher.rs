//! Confirmed publishing (docs/architecture.md, "Messaging topology"): every publish is `mandatory` and waits for the broker's
//! confirm. A message the broker could not route, or refused, is an error of the operation and
//! never a silent success. The connection is made lazily and remade after any failure, so a
//! broker restart costs the caller one failed publish, not a dead process.

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::Mutex;

use contracts::{EVENTS_EXCHANGE, Envelope};

use super::{AmqpError, Headers, connect, topology};
use crate::config::AmqpSettings;
use crate::trace::TraceId;

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] AmqpError),
    #[error("publish failed: {0}")]
    Send(#[source] lapin::Error),
    #[error("the broker could not route {routing_key} from exchange `{exchange}`")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker refused (nacked) {routing_key} on exchange `{exchange}`")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    pub headers: Headers,
}

/// A dead letter a service makes itself ([`Publisher::publish_dead_letter`]).
pub struct OwnDeadLetter<'a> {
    pub id: &'a str,
    /// The service that gave up (`salto-sync`).
    pub service: &'a str,
    /// Where a replay sends it.
    pub original_queue: &'a str,
    pub routing_key: &'a str,
    pub error: &'a str,
    pub body: &'a [u8],
}

/// A confirmed publisher; cheap to clone (all clones share one connection).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    connection_name: String,
    link: Mutex<Option<Link>>,
}

struct Link {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

impl Publisher {
    pub fn new(settings: &AmqpSettings, connection_name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                connection_name: format!("{connection_name}.publisher"),
                link: Mutex::new(None),
            }),
        }
    }

    /// Connects if needed and declares the exchanges: the broker is reachable after `Ok`.
    pub async fn check(&self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// Publishes an event to `connecx.events` under its type.
    pub async fn publish_event(&self, envelope: &Envelope) -> Result<(), PublishError> {
        self.publish_events(std::slice::from_ref(envelope)).await
    }

    /// Publishes `failed`, the outcome of a booking version the worker gives up on (from
    /// [`crate::amqp::EventHandler::gave_up`]), so the booking does not stay `pending` for ever.
    /// Best effort, like the hook: either way it is logged, with the error that gave it up.
    pub async fn publish_given_up(&self, failed: &Envelope, error: &str) {
        match self.publish_event(failed).await {
            Ok(()) => tracing::warn!(
                booking_id = %failed.booking_id,
                version = failed.version,
                %error,
                "gave up; the booking's access failed"
            ),
            Err(publish) => tracing::error!(
                booking_id = %failed.booking_id,
                %publish,
                "gave up, and cannot publish the failure"
            ),
        }
    }

    /// Publishes events pipelined: all are sent, then all confirms awaited. `Ok` only if every
    /// one was routed and confirmed. Each carries the trace of the work in hand, if any.
    pub async fn publish_events(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        let current = crate::trace::current();
        let traced: Vec<(&Envelope, Option<TraceId>)> =
            envelopes.iter().map(|e| (e, current)).collect();
        self.publish_traced_events(&traced).await
    }

    /// [`Self::publish_events`] with each event's own trace (the outbox relay: each stored event
    /// remembers the request that made it).
    pub async fn publish_traced_events(
        &self,
        events: &[(&Envelope, Option<TraceId>)],
    ) -> Result<(), PublishError> {
        let bodies: Vec<(Vec<u8>, String, Headers)> = events
            .iter()
            .map(|(envelope, trace)| {
                let mut headers = Headers::default();
                if let Some(trace) = trace {
                    headers.set(crate::trace::TRACEPARENT, trace.to_traceparent());
                }
                (envelope.to_json(), envelope.event_id.to_string(), headers)
            })
            .collect();
        let messages: Vec<Outgoing<'_>> = events
            .iter()
            .zip(&bodies)
            .map(|((envelope, _), (body, id, headers))| Outgoing {
                exchange: EVENTS_EXCHANGE,
                routing_key: envelope.routing_key(),
                body,
                message_id: Some(id),
                headers: headers.clone(),
            })
            .collect();
        self.publish_all(&messages).await
    }

    /// Sends a dead letter a service makes itself — work it had to give up outside any consumed
    /// message (the nightly clearing, an outbox row that no longer decodes) — to
    /// `connecx.dead` with the headers a consumer's dead letter carries, so the notifier stores
    /// it and mails it like any other. `letter.id` should be fixed per problem: reported again,
    /// it is the same dead letter.
    pub async fn publish_dead_letter(&self, letter: OwnDeadLetter<'_>) -> Result<(), PublishError> {
        use contracts::headers;
        let mut dead = Headers::default();
        dead.set(headers::DEAD_LETTER_ID, letter.id);
        dead.set(headers::SERVICE, letter.service);
        dead.set(headers::ORIGINAL_QUEUE, letter.original_queue);
        dead.set(headers::ORIGINAL_ROUTING_KEY, letter.routing_key);
        dead.set(headers::ERROR_KIND, "permanent");
        dead.set(headers::ERROR, letter.error);
        dead.set(headers::RETRY_COUNT, 0_i64);
        self.publish(Outgoing {
            exchange: contracts::DEAD_LETTER_EXCHANGE,
            routing_key: letter.routing_key,
            body: letter.body,
            message_id: Some(letter.id),
            headers: dead,
        })
        .await
    }

    /// Publishes one message anywhere (retry tiers, dead letters, replays).
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(&message)).await
    }

    /// Publishes messages pipelined and waits for every confirm.
    pub async fn publish_all(&self, messages: &[Outgoing<'_>]) -> Result<(), PublishError> {
        let channel = self.channel().await?;
        let result = publish_confirmed(&channel, messages).await;
        if let Err(PublishError::Send(_)) = &result {
            // The channel or connection is broken: make a new one next time.
            *self.inner.link.lock().await = None;
        }
        result
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = self.inner.link.lock().await;
        if let Some(existing) = link.as_ref()
            && existing.channel.status().connected()
        {
            return Ok(existing.channel.clone());
        }
        let connection = connect(&self.inner.settings, &self.inner.connection_name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::Channel)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::Channel)?;
        topology::declare_exchanges(&channel).await?;
        *link = Some(Link {
            _connection: connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }
}

/// Publishes on a confirm-mode channel and checks every confirm.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    messages: &[Outgoing<'_>],
) -> Result<(), PublishError> {
    let mut pending: Vec<(PublisherConfirm, &Outgoing<'_>)> = Vec::with_capacity(messages.len());
    for message in messages {
        let mut headers = message.headers.to_field_table();
        if !headers.contains_key(crate::trace::TRACEPARENT)
            && let Some(trace) = crate::trace::current()
        {
            headers.insert(
                crate::trace::TRACEPARENT.into(),
                lapin::types::AMQPValue::LongString(trace.to_traceparent().into()),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(id) = message.message_id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = channel
            .basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                message.body,
                properties,
            )
            .await
            .map_err(PublishError::Send)?;
        pending.push((confirm, message));
    }
    let mut first_error = None;
    for (confirm, message) in pending {
        let outcome = confirm.await.map_err(PublishError::Send);
        let error = match outcome {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => None,
            Ok(Confirmation::Ack(Some(_))) => Some(PublishError::Unroutable {
                exchange: message.exchange.to_owned(),
                routing_key: message.routing_key.to_owned(),
            }),
            Ok(Confirmation::Nack(_)) => Some(PublishError::Nacked {
                exchange: message.exchange.to_owned(),
                routing_key: message.routing_key.to_owned(),
            }),
            Err(e) => Some(e),
        };
        if first_error.is_none() {
            first_error = error;
        }
    }
    first_error.map_or(Ok(()), Err)
}
