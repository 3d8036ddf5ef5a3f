//! The per-resident rate limit on booking writes (`CONNECX__LIMITS__WRITES_PER_MINUTE`, default
//! 30, with bursts of `__WRITE_BURST`, default 10; 0 turns it off). Without it one resident could
//! send a thousand reschedules a minute and, each a new Salto timetable, use up the timetable
//! pool of every building on that server. Keyed by the token's `sub`; managers and operators are
//! not limited by it.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::auth::{BuildingRole, Caller};
use crate::problem::Problem;
use crate::settings::LimitsSettings;

/// The limiter of booking writes, shared by every request of the process.
pub struct WriteLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl WriteLimiter {
    pub fn new(limits: &LimitsSettings) -> Self {
        let limiter = NonZeroU32::new(limits.writes_per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(limits.write_burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Counts one booking write of `caller`, or answers 429 `too_many_requests` with the seconds
    /// until the next one is allowed.
    pub fn admit(&self, caller: &Caller) -> Result<(), Problem> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if caller.role != BuildingRole::Resident {
            return Ok(());
        }
        limiter.check_key(&caller.user_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::info!(
                user_id = caller.user_id,
                retry_after_secs = secs,
                "booking write refused: rate limit"
            );
            Problem::too_many_requests(
                "too_many_requests",
                format!("too many booking changes in a short time; try again in {secs} s"),
                secs.max(1),
            )
        })
    }

    /// Forgets, once a minute until `shutdown`, the residents whose allowance is full again, so
    /// the limiter holds only those who wrote lately.
    pub async fn forget_idle(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every_minute.tick() => {}
            }
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
