//! Whether booking-api reaches RabbitMQ, looked at every few seconds: a metric
//! (`connecx_broker_up`, 0/1) and a detail of `/healthz`. Not a readiness condition: while the
//! broker is down bookings are still accepted and wait in the outbox, which is what it is for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use platform::amqp::Publisher;
use tokio_util::sync::CancellationToken;

const LOOK_EVERY: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The broker's state as last seen (up until a look says otherwise).
#[derive(Clone)]
pub struct BrokerHealth {
    up: Arc<AtomicBool>,
}

impl Default for BrokerHealth {
    fn default() -> Self {
        Self {
            up: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl BrokerHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Looks at the broker through `publisher` until `shutdown`.
    pub async fn watch(self, publisher: Publisher, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(LOOK_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let up = matches!(
                tokio::time::timeout(CHECK_TIMEOUT, publisher.check()).await,
                Ok(Ok(()))
            );
            if self.up.swap(up, Ordering::Relaxed) != up {
                if up {
                    tracing::info!("broker reachable again");
                } else {
                    tracing::warn!("broker unreachable; bookings wait in the outbox");
                }
            }
            metrics::gauge!("connecx_broker_up").set(if up { 1.0 } else { 0.0 });
        }
    }
}
