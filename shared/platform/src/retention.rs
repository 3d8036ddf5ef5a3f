//! Keeping PINs and personal data only as long as needed (docs/architecture.md, "Privacy"): a
//! visitor's PIN is erased from everything a service stored `CONNECX__RETENTION__PIN_DAYS`
//! (default 7) after the visit ended, and the visitor's name and email
//! `CONNECX__RETENTION__PERSONAL_DAYS` (default 90) after it. Each service says what it stores
//! ([`Eraser`]); this module runs it every `CONNECX__RETENTION__EVERY_SECS` (default an hour) on
//! the service's clock, once at a time across replicas (a transaction-scoped advisory lock: a
//! replica that finds it taken skips the round — erasing twice would change nothing anyway).
//!
//! The JSON the services keep (snapshots, dead letters) is scrubbed with [`scrub`]: every
//! `"pin"` becomes `null`, every `"visitor"` object loses its name and email.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{ConfigError, Validate};

/// `CONNECX__RETENTION__*`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    /// Days after a visit ended that its PIN is kept.
    pub pin_days: u32,
    /// Days after a visit ended that the visitor's name and email are kept.
    pub personal_days: u32,
    /// How often the erasing looks, in seconds.
    pub every_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            pin_days: 7,
            personal_days: 90,
            every_secs: 3600,
        }
    }
}

impl Validate for RetentionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.every_secs == 0 {
            return Err(ConfigError::invalid(
                "retention.every_secs",
                "must be at least 1",
            ));
        }
        if self.personal_days < self.pin_days {
            return Err(ConfigError::invalid(
                "retention.personal_days",
                "must not be shorter than retention.pin_days",
            ));
        }
        Ok(())
    }
}

/// What is old enough to erase, as of one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// PINs of visits that ended before this are erased.
    pub pins_before: DateTime<Utc>,
    /// Names and emails of visitors whose visit ended before this are erased.
    pub personal_before: DateTime<Utc>,
}

impl Cutoffs {
    pub fn at(now: DateTime<Utc>, settings: &RetentionSettings) -> Self {
        Self {
            pins_before: now - chrono::Duration::days(i64::from(settings.pin_days)),
            personal_before: now - chrono::Duration::days(i64::from(settings.personal_days)),
        }
    }
}

/// What one round erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Rows whose PINs were erased.
    pub pins: u64,
    /// Rows whose personal data were erased.
    pub personal: u64,
}

/// What a service stores, and how to erase it.
pub trait Eraser: Send + Sync + 'static {
    /// Erases, in the caller's transaction, what is older than `cutoffs`.
    fn erase(
        &self,
        tx: &mut PgConnection,
        cutoffs: Cutoffs,
    ) -> impl std::future::Future<Output = Result<Erased, sqlx::Error>> + Send;
}

/// One round, unless another replica of `service` is in one: `None` then.
pub async fn erase_once<E: Eraser>(
    pool: &PgPool,
    clock: &dyn Clock,
    settings: &RetentionSettings,
    service: &str,
    eraser: &E,
) -> Result<Option<Erased>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("retention/{service}"))
            .fetch_one(&mut *tx)
            .await?;
    if !ours {
        return Ok(None);
    }
    let erased = eraser
        .erase(&mut tx, Cutoffs::at(clock.now(), settings))
        .await?;
    tx.commit().await?;
    if erased != Erased::default() {
        tracing::info!(
            service,
            pins = erased.pins,
            personal = erased.personal,
            "old PINs and personal data erased"
        );
    }
    Ok(Some(erased))
}

/// Erases every `settings.every_secs` until `shutdown` (the first round right away).
pub async fn run<E: Eraser>(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    settings: RetentionSettings,
    service: &'static str,
    eraser: E,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(settings.every_secs.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(error) = erase_once(&pool, clock.as_ref(), &settings, service, &eraser).await {
            tracing::warn!(service, %error, "cannot erase old PINs and personal data now; trying again");
        }
    }
}

/// What [`scrub`] erases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrub {
    pub pins: bool,
    pub personal: bool,
}

/// Erases from `value`, at any depth: every `"pin"` (to `null`) and every `"visitor"` object's
/// `name` and `email` (to `""`), as asked. Says whether it changed anything.
pub fn scrub(value: &mut Value, what: Scrub) -> bool {
    let mut changed = false;
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if what.pins && key == "pin" && !field.is_null() {
                    *field = Value::Null;
                    changed = true;
                } else if what.personal
                    && key == "visitor"
                    && let Value::Object(visitor) = field
                {
                    for personal in ["name", "email"] {
                        if let Some(text) = visitor.get_mut(personal)
                            && text.as_str().is_some_and(|t| !t.is_empty())
                        {
                            *text = Value::String(String::new());
                            changed = true;
                        }
                    }
                } else {
                    changed |= scrub(field, what);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= scrub(item, what);
            }
        }
        _ => {}
    }
    changed
}

/// When the visit a JSON document is about ended (`…booking.window.ends_at`), if it says.
pub fn visit_ended_at(value: &Value) -> Option<DateTime<Utc>> {
    let booking = value
        .pointer("/data/booking")
        .or_else(|| value.pointer("/data"))?;
    booking
        .pointer("/window/ends_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scrubbing_erases_pins_and_visitors_at_any_depth_and_nothing_else() {
        let mut result = json!({
            "type": "visitor_access.granted.v1",
            "data": {
                "booking": {"visitor": {"name": "Vera", "email": "vera@x.example"},
                            "resident": {"name": "Ana", "email": "ana@x.example"}},
                "pin": "123456",
                "failure": null
            }
        });
        assert!(scrub(
            &mut result,
            Scrub {
                pins: true,
                personal: false
            }
        ));
        assert_eq!(result["data"]["pin"], Value::Null);
        assert_eq!(result["data"]["booking"]["visitor"]["name"], "Vera");
        assert!(scrub(
            &mut result,
            Scrub {
                pins: false,
                personal: true
            }
        ));
        assert_eq!(
            result["data"]["booking"]["visitor"],
            json!({"name": "", "email": ""})
        );
        assert_eq!(
            result["data"]["booking"]["resident"]["name"], "Ana",
            "residents are the app's"
        );
        assert!(
            !scrub(
                &mut result,
                Scrub {
                    pins: true,
                    personal: true
                }
            ),
            "nothing left to erase"
        );
    }

    #[test]
    fn the_cutoffs_count_back_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cutoffs = Cutoffs::at(now, &RetentionSettings::default());
        assert_eq!(
            cutoffs.pins_before.to_rfc3339(),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            cutoffs.personal_before.to_rfc3339(),
            "2026-09-07T00:00:00+00:00"
        );
    }
}
