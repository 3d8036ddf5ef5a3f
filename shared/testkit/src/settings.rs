//! The shared sections of a service's settings as a test runs it: its database and broker URLs,
//! short retry tiers of the test's choosing, and everything else at its shipped default (no
//! health port; a test that reads `/metrics` sets one).

use std::time::Duration;

use platform::config::{
    AmqpSettings, DatabaseSettings, LogSettings, RetrySettings, RetryTiers, SharedSettings,
};

/// `database_url` and `amqp_url` as given (already the service's own role and user), the retry
/// tiers `retry`, a small pool.
pub fn shared_settings(
    database_url: String,
    amqp_url: String,
    retry: &[Duration],
) -> SharedSettings {
    SharedSettings {
        database: DatabaseSettings {
            url: database_url,
            max_connections: 5,
        },
        amqp: AmqpSettings {
            url: amqp_url,
            prefetch: 16,
            delivery_limit: 5,
            drain_timeout_secs: 30,
        },
        log: LogSettings::default(),
        health: Default::default(),
        retry: RetrySettings {
            tiers: RetryTiers(retry.to_vec()),
        },
    }
}
