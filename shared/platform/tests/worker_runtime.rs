//! The worker runtime against the real broker: retries, dead letters, poison, lost connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::{DEAD_LETTER_EXCHANGE, Envelope, Event, QueueSpec, headers};
use lapin::ExchangeKind;
use platform::amqp::{EventHandler, HandlerError, Publisher, Worker};
use platform::config::{AmqpSettings, RetryTiers};
use testkit::TestBroker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use common::visitor_booking_created;

const QUEUE: QueueSpec = QueueSpec {
    name: "ipassan-sync",
    exchange: contracts::EVENTS_EXCHANGE,
    bindings: &["visitor_booking.#"],
    dead_letter_exchange: DEAD_LETTER_EXCHANGE,
};

/// A handler whose answer per booking is scripted: it fails as told, then succeeds.
#[derive(Clone, Default)]
struct Scripted {
    failures: Arc<Mutex<HashMap<Uuid, Vec<HandlerError>>>>,
    attempts: Arc<Mutex<HashMap<Uuid, u32>>>,
    handled: Arc<Mutex<Vec<Uuid>>>,
    /// Bookings whose handling panics.
    panics: Arc<Mutex<Vec<Uuid>>>,
    delay: Duration,
    /// When set, each handling takes a permit first: the test decides how far the worker gets.
    permits: Option<Arc<tokio::sync::Semaphore>>,
    /// When set, the handling of this one booking takes a permit of its own first.
    gate: Option<(Uuid, Arc<tokio::sync::Semaphore>)>,
}

impl Scripted {
    fn fail(&self, booking: Uuid, errors: Vec<HandlerError>) {
        self.failures.lock().unwrap().insert(booking, errors);
    }
    fn attempts(&self, booking: Uuid) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(&booking)
            .copied()
            .unwrap_or(0)
    }
    fn handled(&self) -> Vec<Uuid> {
        self.handled.lock().unwrap().clone()
    }
}

impl EventHandler for Scripted {
    async fn handle(&self, envelope: Envelope) -> Result<(), HandlerError> {
        if let Some(permits) = &self.permits {
            permits.acquire().await.unwrap().forget();
        }
        *self
            .attempts
            .lock()
            .unwrap()
            .entry(envelope.booking_id)
            .or_default() += 1;
        if let Some((booking, gate)) = &self.gate
            && *booking == envelope.booking_id
        {
            gate.acquire().await.unwrap().forget();
        }
        tokio::time::sleep(self.delay).await;
        if self.panics.lock().unwrap().contains(&envelope.booking_id) {
            panic!("scripted panic for {}", envelope.booking_id);
        }
        let next_failure = {
            let mut failures = self.failures.lock().unwrap();
            failures
                .get_mut(&envelope.booking_id)
                .and_then(|f| (!f.is_empty()).then(|| f.remove(0)))
        };
        match next_failure {
            Some(error) => Err(error),
            None => {
                self.handled.lock().unwrap().push(envelope.booking_id);
                Ok(())
            }
        }
    }
}

struct Running {
    broker: TestBroker,
    handler: Scripted,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_worker(tiers: &str, handler: Scripted) -> Running {
    platform::telemetry::init_for_tests();
    let broker = TestBroker::create().await;
    let settings = AmqpSettings {
        url: broker.url.clone(),
        prefetch: 8,
        delivery_limit: 5,
        drain_timeout_secs: 30,
    };
    let worker = Worker::new(
        QUEUE,
        settings,
        tiers.parse::<RetryTiers>().unwrap(),
        handler.clone(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await.unwrap() }
    });
    // Published messages reach the handler once the worker has bound its queue and consumes it.
    broker
        .wait_for_consumer(QUEUE.name, Duration::from_secs(10))
        .await;
    Running {
        broker,
        handler,
        stop,
        task,
    }
}

/// A worker with a scripted handler, and a tap on the dead-letter exchange.
async fn start_worker_watching_dead_letters(tiers: &str) -> (Running, testkit::EventTap) {
    let run = start_worker(tiers, Scripted::default()).await;
    let dead = run
        .broker
        .tap_exchange(DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout, "")
        .await;
    (run, dead)
}

async fn wait_until<F, Fut>(timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publisher(broker: &TestBroker) -> Publisher {
    Publisher::new(
        &AmqpSettings {
            url: broker.url.clone(),
            prefetch: 1,
            delivery_limit: 5,
            drain_timeout_secs: 30,
        },
        "test",
    )
}

#[tokio::test]
async fn a_transient_failure_is_retried_through_the_tiers_then_succeeds() {
    let handler = Scripted::default();
    let run = start_worker("200ms,300ms,400ms", handler.clone()).await;
    let booking = Uuid::new_v4();
    run.handler.fail(
        booking,
        vec![
            HandlerError::Transient("503".into()),
            HandlerError::Transient("503".into()),
        ],
    );
    publisher(&run.broker)
        .await
        .publish_event(&visitor_booking_created(booking))
        .await
        .unwrap();

    wait_until(Duration::from_secs(10), || async {
        run.handler.handled().contains(&booking)
    })
    .await;
    assert_eq!(run.handler.attempts(booking), 3);
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_gives_a_dead_letter_with_the_panic_and_the_worker_goes_on() {
    let (run, mut dead) = start_worker_watching_dead_letters("200ms").await;
    let (bad, good) = (Uuid::new_v4(), Uuid::new_v4());
    run.handler.panics.lock().unwrap().push(bad);
    let publisher = publisher(&run.broker).await;
    publisher
        .publish_event(&visitor_booking_created(bad))
        .await
        .unwrap();
    publisher
        .publish_event(&visitor_booking_created(good))
        .await
        .unwrap();

    let letter = dead
        .next_message(Duration::from_secs(10))
        .await
        .expect("a dead letter");
    let error = letter.headers.get_str(headers::ERROR).unwrap_or_default();
    assert!(
        error.contains(&format!("handler panicked: scripted panic for {bad}")),
        "{error}"
    );
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("permanent")
    );
    wait_until(Duration::from_secs(10), || async {
        run.handler.handled().contains(&good)
    })
    .await;
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_permanent_failure_becomes_a_dead_letter_with_the_reason() {
    let (run, mut dead) = start_worker_watching_dead_letters("200ms").await;
    let booking = Uuid::new_v4();
    run.handler.fail(
        booking,
        vec![HandlerError::Permanent("403 Access Denied: site".into())],
    );
    let event = visitor_booking_created(booking);
    publisher(&run.broker)
        .await
        .publish_event(&event)
        .await
        .unwrap();

    let letter = dead
        .next_message(Duration::from_secs(10))
        .await
        .expect("a dead letter");
    assert_eq!(Envelope::from_json(&letter.body).unwrap(), event);
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("permanent")
    );
    assert_eq!(
        letter.headers.get_str(headers::SERVICE),
        Some("ipassan-sync")
    );
    assert_eq!(
        letter.headers.get_str(headers::ORIGINAL_QUEUE),
        Some("ipassan-sync")
    );
    assert_eq!(
        letter.headers.get_str(headers::ORIGINAL_ROUTING_KEY),
        Some("visitor_booking.created.v1")
    );
    assert!(
        letter
            .headers
            .get_str(headers::ERROR)
            .unwrap()
            .contains("403 Access Denied")
    );
    assert!(letter.headers.get_str(headers::DEAD_LETTER_ID).is_some());
    assert_eq!(
        run.handler.attempts(booking),
        1,
        "a permanent failure is not retried"
    );
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn exhausted_retries_become_a_dead_letter() {
    let (run, mut dead) = start_worker_watching_dead_letters("100ms,100ms").await;
    let booking = Uuid::new_v4();
    run.handler
        .fail(booking, vec![HandlerError::Transient("timeout".into()); 10]);
    publisher(&run.broker)
        .await
        .publish_event(&visitor_booking_created(booking))
        .await
        .unwrap();

    let letter = dead
        .next_message(Duration::from_secs(10))
        .await
        .expect("a dead letter");
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("transient_exhausted")
    );
    assert_eq!(letter.headers.get_i64(headers::RETRY_COUNT), Some(2));
    assert!(letter.headers.get_str(headers::FIRST_FAILED_AT).is_some());
    assert_eq!(run.handler.attempts(booking), 3);
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_worker_keeps_going() {
    let (run, mut dead) = start_worker_watching_dead_letters("100ms").await;
    run.broker
        .publish_raw("visitor_booking.created.v1", b"this is not json")
        .await;

    let letter = dead
        .next_message(Duration::from_secs(10))
        .await
        .expect("a dead letter");
    assert_eq!(letter.body, b"this is not json");
    assert_eq!(
        letter.headers.get_str(headers::ERROR_KIND),
        Some("malformed")
    );

    let booking = Uuid::new_v4();
    publisher(&run.broker)
        .await
        .publish_event(&visitor_booking_created(booking))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), || async {
        run.handler.handled().contains(&booking)
    })
    .await;
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn killing_the_broker_connections_mid_stream_loses_no_message() {
    // The worker gets as far as the test lets it (permits), so the cuts land mid-stream however
    // slowly this test is scheduled.
    let permits = Arc::new(tokio::sync::Semaphore::new(40));
    let handler = Scripted {
        delay: Duration::from_millis(5),
        permits: Some(Arc::clone(&permits)),
        ..Default::default()
    };
    let run = start_worker("100ms", handler.clone()).await;
    let publisher = publisher(&run.broker).await;
    let bookings: Vec<Uuid> = (0..600).map(|_| Uuid::new_v4()).collect();
    let events: Vec<Envelope> = bookings
        .iter()
        .map(|b| visitor_booking_created(*b))
        .collect();
    publisher.publish_events(&events).await.unwrap();

    // Cut the connections twice while the worker holds messages it may not finish yet.
    for (threshold, more) in [(40, 120), (160, tokio::sync::Semaphore::MAX_PERMITS - 200)] {
        wait_until(Duration::from_secs(20), || async {
            run.handler.handled().len() >= threshold
        })
        .await;
        assert!(
            run.handler.handled().len() < bookings.len(),
            "the worker finished before the cut"
        );
        assert!(
            run.broker.close_connections().await > 0,
            "a connection was cut"
        );
        permits.add_permits(more);
    }

    wait_until(Duration::from_secs(60), || async {
        let handled = run.handler.handled();
        bookings.iter().all(|b| handled.contains(b))
    })
    .await;
    // Messages whose ack was cut come back and are handled again (at least once); the queue
    // then drains completely.
    wait_until(Duration::from_secs(30), || async {
        run.broker.queue_depth("ipassan-sync").await == 0
    })
    .await;
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn messages_finished_behind_a_slow_one_are_acked_and_the_slow_one_is_not() {
    // The first message delivered is held in its handler; the ten behind it finish. Their acks
    // may not be one `multiple` ack (it would settle the first too), nor wait for the first (with
    // a prefetch of 8 the worker would then stall after seven of them).
    let slow = Uuid::new_v4();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = Scripted {
        gate: Some((slow, Arc::clone(&gate))),
        ..Default::default()
    };
    let run = start_worker("100ms", handler.clone()).await;
    let publisher = publisher(&run.broker).await;
    publisher
        .publish_event(&visitor_booking_created(slow))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), || async {
        run.handler.attempts(slow) == 1
    })
    .await;
    let others: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let events: Vec<Envelope> = others.iter().map(|b| visitor_booking_created(*b)).collect();
    publisher.publish_events(&events).await.unwrap();
    wait_until(Duration::from_secs(10), || async {
        let handled = run.handler.handled();
        others.iter().all(|b| handled.contains(b))
    })
    .await;

    // Give the last acks time to reach the broker, then cut the connection: what was acked stays
    // settled, what was not comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(run.broker.close_connections().await > 0);
    gate.add_permits(2);
    wait_until(Duration::from_secs(30), || async {
        run.handler.handled().contains(&slow) && run.handler.attempts(slow) == 2
    })
    .await;
    wait_until(Duration::from_secs(10), || async {
        run.broker.queue_depth("ipassan-sync").await == 0
    })
    .await;
    for booking in &others {
        assert_eq!(
            run.handler.attempts(*booking),
            1,
            "a finished message was not acked"
        );
    }
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error_not_a_success() {
    let broker = TestBroker::create().await;
    let publisher = publisher(&broker).await;
    // No queue is bound to connecx.events in a fresh vhost.
    let error = publisher
        .publish_event(&visitor_booking_created(Uuid::new_v4()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("could not route"), "{error}");
}

#[tokio::test]
async fn a_message_larger_than_a_frame_with_the_longest_error_is_dead_lettered_whole() {
    // The services ask for 32 KiB frames (platform::amqp::DEFAULT_FRAME_MAX): a body of several
    // frames, and a dead letter's header with `x-error` at its longest (2000 characters, here of
    // two bytes each), must still go through.
    let (run, mut dead) = start_worker_watching_dead_letters("200ms").await;
    let booking = Uuid::new_v4();
    run.handler
        .fail(booking, vec![HandlerError::Permanent("é".repeat(5000))]);
    let mut event = visitor_booking_created(booking);
    if let Event::VisitorBookingCreated(visit) = &mut event.event {
        visit.visitor.name = "B".repeat(3 * platform::amqp::DEFAULT_FRAME_MAX as usize);
    }
    publisher(&run.broker)
        .await
        .publish_event(&event)
        .await
        .unwrap();

    let letter = dead
        .next_message(Duration::from_secs(10))
        .await
        .expect("a dead letter");
    assert_eq!(Envelope::from_json(&letter.body).unwrap(), event);
    let error = letter.headers.get_str(headers::ERROR).unwrap();
    assert_eq!(
        error.chars().count(),
        2001,
        "2000 characters and the ellipsis"
    );
    run.stop.cancel();
    run.task.await.unwrap();
}
