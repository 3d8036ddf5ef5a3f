//! RabbitMQ (docs/architecture.md, "Messaging topology"): connecting, declaring the topology, confirmed publishing, and the worker
//! runtime. This is the only place in the workspace that talks to lapin.

mod acks;
mod headers;
mod publisher;
pub mod topology;
mod worker;

pub use headers::Headers;
pub use publisher::{Outgoing, OwnDeadLetter, PublishError, Publisher};
pub use worker::{
    Disposition, EventHandler, Events, HandlerError, Message, MessageHandler, Worker, WorkerError,
    decide,
};

use lapin::uri::AMQPUri;
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

/// The largest frame a connection asks for unless the URL names one (`?frame_max=`). lapin keeps
/// a send and a receive buffer of 32 frames per connection, zero-filled up front: at RabbitMQ's
/// default of 128 KiB that is 8 MiB of memory for every connection, at 32 KiB 2 MiB. A body larger
/// than a frame simply goes as several frames; the content header, which must fit in one, holds
/// the properties and headers — a few KiB at most here (`x-error` is cut at 2000 characters).
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// Opens a connection named after the service (the name shows in the management UI and in
/// `rabbitmqctl list_connections`).
pub async fn connect(
    settings: &AmqpSettings,
    connection_name: &str,
) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let connected = match settings.url.parse::<AMQPUri>() {
        Ok(mut uri) => {
            uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
            Connection::connect_uri(uri, properties).await
        }
        // lapin names what is wrong with the URL.
        Err(_) => Connection::connect(&settings.url, properties).await,
    };
    connected.map_err(|source| AmqpError::Connect {
        url: redact_url(&settings.url),
        source,
    })
}
