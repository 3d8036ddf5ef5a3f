//! RabbitMQ (DESIGN §4): connecting, declaring the topology, confirmed publishing, and the worker
//! runtime. This is the only place in the workspace that talks to lapin.

mod headers;
mod publisher;
pub mod topology;
mod worker;

pub use headers::Headers;
pub use publisher::{Outgoing, PublishError, Publisher};
pub use worker::{
    Disposition, EventHandler, Events, HandlerError, Message, MessageHandler, Worker, WorkerError,
    decide,
};

use lapin::{Connection, ConnectionProperties};

use crate::config::{AmqpSettings, redact_url};

/// Why the broker could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ refused to declare the topology: {0}")]
    Topology(#[source] lapin::Error),
    #[error("RabbitMQ channel error: {0}")]
    Channel(#[source] lapin::Error),
    #[error("the broker closed the consumer")]
    ConsumerClosed,
}

/// Opens a connection named after the service (the name shows in the management UI and in
/// `rabbitmqctl list_connections`).
pub async fn connect(
    settings: &AmqpSettings,
    connection_name: &str,
) -> Result<Connection, AmqpError> {
    Connection::connect(
        &settings.url,
        ConnectionProperties::default().with_connection_name(connection_name.into()),
    )
    .await
    .map_err(|source| AmqpError::Connect {
        url: redact_url(&settings.url),
        source,
    })
}
