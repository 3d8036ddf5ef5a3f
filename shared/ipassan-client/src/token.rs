//! The bearer token, shared by every call of every in-flight message: fetched once, renewed a
//! little before it expires (so a call rarely meets a 401) and dropped when iPassan refuses it.
//! Fetching holds the lock, so a burst of messages makes one token request, not one each.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub renew_at: Instant,
}

/// The longest a token is used before a new one is fetched, whatever iPassan says: a lifetime
/// near `u64::MAX` seconds would overflow the clock (a panic), and a day is plenty.
pub const LONGEST_USE: Duration = Duration::from_secs(24 * 3600);

impl Token {
    /// Renews at 80 % of the lifetime, and at most 30 s before expiry for long-lived tokens;
    /// a lifetime beyond [`LONGEST_USE`] counts as that.
    pub fn new(value: String, expires_in: Duration, issued_at: Instant) -> Self {
        let expires_in = expires_in.min(LONGEST_USE);
        let margin = (expires_in / 5).min(Duration::from_secs(30));
        Self {
            value,
            renew_at: issued_at + expires_in.saturating_sub(margin),
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.renew_at
    }
}

#[derive(Debug, Default)]
pub struct TokenCache {
    current: Mutex<Option<Token>>,
}

impl TokenCache {
    /// The cached token if still fresh, else the one `fetch` gets (and caches).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<String, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Token, E>>,
    {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref()
            && token.is_fresh(Instant::now())
        {
            return Ok(token.value.clone());
        }
        let token = fetch().await?;
        let value = token.value.clone();
        *current = Some(token);
        Ok(value)
    }

    /// Forgets `value` after iPassan refused it, unless another call already replaced it.
    pub async fn refused(&self, value: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.value == value) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_before_it_expires() {
        let now = Instant::now();
        let hour = Token::new("t".into(), Duration::from_secs(3600), now);
        assert!(hour.is_fresh(now + Duration::from_secs(3569)));
        assert!(!hour.is_fresh(now + Duration::from_secs(3570)));
        let short = Token::new("t".into(), Duration::from_secs(1), now);
        assert!(short.is_fresh(now + Duration::from_millis(799)));
        assert!(!short.is_fresh(now + Duration::from_millis(800)));
        let zero = Token::new("t".into(), Duration::ZERO, now);
        assert!(!zero.is_fresh(now));
    }

    #[tokio::test]
    async fn the_cache_fetches_once_and_again_after_a_refusal() {
        let cache = TokenCache::default();
        let fetches = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(Token::new(
                format!("t{n}"),
                Duration::from_secs(3600),
                Instant::now(),
            ))
        };
        assert_eq!(cache.get(fetch).await, Ok("t0".to_owned()));
        assert_eq!(cache.get(fetch).await, Ok("t0".to_owned()));
        cache.refused("stale-one").await;
        assert_eq!(cache.get(fetch).await, Ok("t0".to_owned()));
        cache.refused("t0").await;
        assert_eq!(cache.get(fetch).await, Ok("t1".to_owned()));
    }
}

#[cfg(test)]
mod lifetime_tests {
    use super::*;

    #[test]
    fn an_absurd_lifetime_is_used_for_a_day_at_most_and_does_not_panic() {
        let now = Instant::now();
        for seconds in [1_000_000_000_000_000_000, u64::MAX] {
            let token = Token::new("t".into(), Duration::from_secs(seconds), now);
            assert!(token.is_fresh(now + Duration::from_secs(3600)));
            assert!(!token.is_fresh(now + LONGEST_USE));
        }
        let zero = Token::new("t".into(), Duration::ZERO, now);
        assert!(
            !zero.is_fresh(now),
            "a token already expired is fetched again"
        );
    }
}
