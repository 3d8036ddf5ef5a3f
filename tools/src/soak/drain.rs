//! Waiting for the system to come to rest after the load: booking-api's outboxes sent, every queue
//! of the vhost (retry tiers included) empty with nothing unacknowledged, and no replica handling
//! anything — all of it for long enough that the management API's sampled counts (every 5 s) have
//! caught up. Gives up after a timeout, which the report counts as a violation.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::evidence::Evidence;
use super::rabbit::Management;

/// How long everything must look idle before the run counts as drained.
const QUIET_FOR: Duration = Duration::from_secs(12);
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How the drain went.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    pub took: Duration,
    pub timed_out: bool,
    /// What still looked busy when it gave up.
    pub still_busy: Vec<String>,
}

pub async fn wait_until_drained(
    booking: &PgPool,
    management: &Management,
    evidence: &Evidence,
    timeout: Duration,
) -> Drained {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut handled_before = evidence.handled_count();
    loop {
        let busy = busy_parts(booking, management).await;
        let handled_now = evidence.handled_count();
        let idle = busy.is_empty() && handled_now == handled_before;
        handled_before = handled_now;
        if idle {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET_FOR {
                return Drained {
                    took: started.elapsed(),
                    timed_out: false,
                    still_busy: Vec::new(),
                };
            }
        } else {
            quiet_since = None;
        }
        if started.elapsed() >= timeout {
            let mut still_busy = busy;
            if handled_now != handled_before {
                still_busy.push("replicas are still handling messages".into());
            }
            return Drained {
                took: started.elapsed(),
                timed_out: true,
                still_busy,
            };
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// What is not at rest yet, in words.
async fn busy_parts(booking: &PgPool, management: &Management) -> Vec<String> {
    let mut busy = Vec::new();
    match sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(booking)
    .await
    {
        Ok(0) => {}
        Ok(unsent) => busy.push(format!("{unsent} outbox events unsent")),
        Err(error) => busy.push(format!("outbox unreadable: {error}")),
    }
    match management.queues().await {
        Ok(queues) => {
            for queue in queues {
                // The audit's own taps and the parking queue are read (or counted) elsewhere.
                if queue.name.starts_with("soak.") || queue.name == contracts::PARKING_QUEUE {
                    continue;
                }
                if queue.messages > 0 || queue.unacked > 0 {
                    busy.push(format!(
                        "{}: {} messages ({} unacked)",
                        queue.name, queue.messages, queue.unacked
                    ));
                }
            }
        }
        Err(error) => busy.push(format!("queues unreadable: {error:#}")),
    }
    busy
}
