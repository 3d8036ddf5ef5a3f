//! Each service's own RabbitMQ user (`contracts::broker_permissions`) against the real broker:
//! it lets the service do its part of the topology — declare, bind, consume, publish, retry and
//! dead-letter — and RabbitMQ refuses it (403 ACCESS_REFUSED) everything that belongs to another
//! service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::{
    DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Envelope, IPASSAN_SYNC_QUEUE, NOTIFIER_QUEUE,
    PARKING_EXCHANGE, SALTO_SYNC_QUEUE, Service, retry_queue_name,
};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use platform::amqp::topology::declare_consumer_queue;
use platform::amqp::{
    AmqpError, EventHandler, HandlerError, Outgoing, OwnDeadLetter, PublishError, Publisher, Worker,
};
use platform::config::{AmqpSettings, RetryTiers};
use testkit::TestBroker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::visitor_booking_created;

fn settings(url: String) -> AmqpSettings {
    AmqpSettings {
        url,
        prefetch: 4,
        delivery_limit: 5,
        drain_timeout_secs: 5,
    }
}

async fn connect_as(broker: &TestBroker, service: Service) -> Connection {
    Connection::connect(
        &broker.url_for(service),
        ConnectionProperties::default().with_connection_name(service.name().into()),
    )
    .await
    .unwrap_or_else(|e| panic!("{service} cannot log in: {e}"))
}

/// Whether the broker refused the operation for lack of permission (channel closed with 403).
fn access_refused(result: Result<impl std::fmt::Debug, lapin::Error>) -> bool {
    match result {
        Err(error) => matches!(
            error.kind(),
            lapin::ErrorKind::ProtocolError(e)
                if e.kind() == &AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
        ),
        Ok(_) => false,
    }
}

#[tokio::test]
async fn every_service_declares_and_consumes_its_queues_and_publishes_as_its_own_user() {
    let broker = TestBroker::create().await;
    let tiers: RetryTiers = "1m,5m".parse().unwrap();
    let mut consuming = Vec::new();
    for service in Service::ALL {
        let connection = connect_as(&broker, service).await;
        for spec in service.consumes() {
            let channel = connection.create_channel().await.unwrap();
            declare_consumer_queue(&channel, spec, &tiers, 5)
                .await
                .unwrap_or_else(|e| panic!("{service} declaring {}: {e}", spec.name));
            channel
                .basic_consume(
                    spec.name.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{service} consuming {}: {e}", spec.name));
        }
        consuming.push(connection);
    }
    // Every queue exists now, so every (mandatory) publish below has somewhere to go.
    for service in Service::ALL {
        let publisher = Publisher::new(&settings(broker.url_for(service)), service.name());
        if service.publishes_events() {
            publisher
                .publish_event(&visitor_booking_created(Uuid::new_v4()))
                .await
                .unwrap_or_else(|e| panic!("{service} publishing an event: {e}"));
        }
        publisher
            .publish_dead_letter(OwnDeadLetter {
                id: &Uuid::new_v4().to_string(),
                service: service.name(),
                original_queue: service.consumes()[0].name,
                routing_key: "visitor_booking.created.v1",
                error: "a test",
                body: b"{}",
            })
            .await
            .unwrap_or_else(|e| panic!("{service} publishing a dead letter: {e}"));
        for spec in service.consumes() {
            // A retry, as the worker runtime republishes it (the notifier's replay goes the
            // same way, to the work queue).
            for routing_key in [retry_queue_name(spec.name, 2), spec.name.to_owned()] {
                publisher
                    .publish(Outgoing {
                        exchange: "",
                        routing_key: &routing_key,
                        body: b"{}",
                        message_id: None,
                        headers: Default::default(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{service} publishing to {routing_key}: {e}"));
            }
        }
    }
    for connection in consuming {
        let _ = connection.close(200, "done".into()).await;
    }
}

/// Fails each booking's first attempt, or every attempt of the bookings told to fail for good.
#[derive(Clone, Default)]
struct FailsFirst {
    seen: Arc<Mutex<Vec<Uuid>>>,
    handled: Arc<Mutex<Vec<Uuid>>>,
    failing_for_good: Arc<Mutex<Vec<Uuid>>>,
}

impl EventHandler for FailsFirst {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        let id = envelope.booking_id;
        if self.failing_for_good.lock().unwrap().contains(&id) {
            return Err(HandlerError::Permanent("refused for good".into()));
        }
        let mut seen = self.seen.lock().unwrap();
        if !seen.contains(&id) {
            seen.push(id);
            return Err(HandlerError::Transient("not yet".into()));
        }
        self.handled.lock().unwrap().push(id);
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_as_its_own_user_retries_through_its_tiers_and_dead_letters() {
    platform::telemetry::init_for_tests();
    let broker = TestBroker::create().await;
    let mut dead_letters = broker
        .tap_exchange(DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout, "")
        .await;
    let handler = FailsFirst::default();
    let worker = Worker::new(
        IPASSAN_SYNC_QUEUE,
        settings(broker.url_for(Service::IpassanSync)),
        "100ms".parse().unwrap(),
        handler.clone(),
    );
    let attached = worker.attached();
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !attached.get() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ipassan-sync never consumed its queue as its own user"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (retried, refused) = (Uuid::new_v4(), Uuid::new_v4());
    handler.failing_for_good.lock().unwrap().push(refused);
    let booking_api = Publisher::new(&settings(broker.url_for(Service::BookingApi)), "test");
    booking_api
        .publish_events(&[
            visitor_booking_created(retried),
            visitor_booking_created(refused),
        ])
        .await
        .unwrap();

    let dead = dead_letters
        .next_message(Duration::from_secs(10))
        .await
        .expect("the refused booking's dead letter");
    assert_eq!(Envelope::from_json(&dead.body).unwrap().booking_id, refused);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handler.handled.lock().unwrap().contains(&retried) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried booking never came back from its tier"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_service_is_refused_what_belongs_to_another() {
    let broker = TestBroker::create().await;
    // The others' queues exist, as they would on a running system.
    for spec in [NOTIFIER_QUEUE, SALTO_SYNC_QUEUE] {
        broker.declare_queue(&spec, 5).await;
    }
    let ipassan = connect_as(&broker, Service::IpassanSync).await;

    let channel = ipassan.create_channel().await.unwrap();
    assert!(
        access_refused(
            channel
                .basic_consume(
                    NOTIFIER_QUEUE.name.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        ),
        "ipassan-sync consuming the notifier's queue"
    );

    let channel = ipassan.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = match channel
        .basic_publish(
            PARKING_EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await
    {
        Ok(confirm) => confirm.await,
        Err(e) => Err(e),
    };
    assert!(
        access_refused(published),
        "ipassan-sync publishing to the parking exchange"
    );

    // (A passive declaration is not checked by RabbitMQ 3.10: it only says whether the queue
    // exists and how deep it is.)
    let channel = ipassan.create_channel().await.unwrap();
    let declared = declare_consumer_queue(&channel, &SALTO_SYNC_QUEUE, &RetryTiers::default(), 5)
        .await
        .map_err(|e| match e {
            AmqpError::Topology(e) => e,
            other => panic!("{other}"),
        });
    assert!(
        access_refused(declared),
        "ipassan-sync declaring salto-sync's queue"
    );

    let channel = ipassan.create_channel().await.unwrap();
    assert!(
        access_refused(
            channel
                .queue_declare(
                    retry_queue_name(NOTIFIER_QUEUE.name, 1).as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
        ),
        "ipassan-sync declaring a retry tier of the notifier"
    );

    let channel = ipassan.create_channel().await.unwrap();
    assert!(
        access_refused(
            channel
                .queue_delete(NOTIFIER_QUEUE.name.into(), QueueDeleteOptions::default())
                .await
        ),
        "ipassan-sync deleting the notifier's queue"
    );

    // Its own queue, bound to an exchange it may not read: the dead letters.
    let channel = ipassan.create_channel().await.unwrap();
    declare_consumer_queue(&channel, &IPASSAN_SYNC_QUEUE, &RetryTiers::default(), 5)
        .await
        .unwrap();
    assert!(
        access_refused(
            channel
                .queue_bind(
                    IPASSAN_SYNC_QUEUE.name.into(),
                    DEAD_LETTER_EXCHANGE.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        ),
        "ipassan-sync binding its queue to the dead letters"
    );
    let _ = ipassan.close(200, "done".into()).await;

    // The notifier only listens: it may not publish events.
    let notifier = Publisher::new(&settings(broker.url_for(Service::Notifier)), "notifier");
    let error = notifier
        .publish(Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: "visitor_booking.created.v1",
            body: b"{}",
            message_id: None,
            headers: Default::default(),
        })
        .await
        .expect_err("the notifier publishing an event");
    let PublishError::Send(error) = error else {
        panic!("the notifier publishing an event: {error:?}");
    };
    assert!(
        access_refused(Err::<(), _>(error)),
        "the notifier publishing an event"
    );

    // booking-api may not take ipassan-sync's work.
    let booking_api = connect_as(&broker, Service::BookingApi).await;
    let channel = booking_api.create_channel().await.unwrap();
    assert!(
        access_refused(
            channel
                .basic_consume(
                    IPASSAN_SYNC_QUEUE.name.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        ),
        "booking-api consuming ipassan-sync's queue"
    );
    let _ = booking_api.close(200, "done".into()).await;
}
