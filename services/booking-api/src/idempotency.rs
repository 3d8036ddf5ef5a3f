//! `Idempotency-Key` on booking creation (docs/architecture.md, "Services and what each owns").
//!
//! A key is the caller's (building, user) own. The first request with a key records, in the
//! same transaction that creates the booking, a fingerprint of the request and the booking it
//! made. Within 24 hours, the same key with the same request answers with that booking again
//! (201, `Idempotent-Replayed: true`), and the same key with another request is a 422. Only a
//! creation records its key: a request that failed created nothing, so retrying it runs it again.
//! Two concurrent requests with one key serialize on the key's primary key: the second waits for
//! the first to commit and then replays it.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::access::BookingKind;
use crate::extract::IdempotencyKey;

/// What a key already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the key now belongs to this request (once the transaction commits).
    Fresh,
    /// The same request was made before: answer with this booking.
    Replay { kind: BookingKind, booking_id: Uuid },
    /// The key was used for another request.
    Mismatch,
}

/// The request's fingerprint: method, path and the body as canonical JSON (so key order and
/// whitespace do not matter).
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => hasher.update(canonical(&value).as_bytes()),
        Err(_) => hasher.update(body),
    }
    hex::encode(hasher.finalize())
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn kind_to_stored(kind: BookingKind) -> &'static str {
    match kind {
        BookingKind::Visitor => "visitor",
        BookingKind::Facility => "facility",
    }
}

fn kind_from_stored(text: &str) -> BookingKind {
    match text {
        "facility" => BookingKind::Facility,
        _ => BookingKind::Visitor,
    }
}

/// Claims `key` for the booking about to be created, inside the creating transaction.
pub async fn claim(
    conn: &mut PgConnection,
    caller: &Caller,
    key: &IdempotencyKey,
    request_hash: &str,
    kind: BookingKind,
    booking_id: Uuid,
) -> Result<Claim, sqlx::Error> {
    // An expired key is free again.
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE building_id = $1 AND user_id = $2 AND key = $3 AND created_at < now() - interval '24 hours'",
    )
    .bind(caller.building_id.as_str())
    .bind(&caller.user_id)
    .bind(&key.0)
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (building_id, user_id, key, request_hash, booking_kind, booking_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
    )
    .bind(caller.building_id.as_str())
    .bind(&caller.user_id)
    .bind(&key.0)
    .bind(request_hash)
    .bind(kind_to_stored(kind))
    .bind(booking_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let (stored_hash, stored_kind, stored_booking): (String, String, Uuid) = sqlx::query_as(
        "SELECT request_hash, booking_kind, booking_id FROM idempotency_keys
         WHERE building_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(caller.building_id.as_str())
    .bind(&caller.user_id)
    .bind(&key.0)
    .fetch_one(&mut *conn)
    .await?;
    if stored_hash == request_hash {
        Ok(Claim::Replay {
            kind: kind_from_stored(&stored_kind),
            booking_id: stored_booking,
        })
    } else {
        Ok(Claim::Mismatch)
    }
}

/// How long a key stands for the booking it made.
const KEY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Deletes keys older than 24 hours.
pub async fn purge_expired(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    crate::store::delete_older_than(pool, "idempotency_keys", "created_at", KEY_LIFETIME).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace() {
        let a = fingerprint(
            "POST",
            "/v1/visitor-bookings",
            br#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#,
        );
        let b = fingerprint(
            "POST",
            "/v1/visitor-bookings",
            b"{ \"b\": {\"d\":\"x\", \"c\":[1, 2]}, \"a\": 1 }",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn the_fingerprint_differs_for_another_body_or_path() {
        let a = fingerprint("POST", "/v1/visitor-bookings", br#"{"a":1}"#);
        assert_ne!(
            a,
            fingerprint("POST", "/v1/visitor-bookings", br#"{"a":2}"#)
        );
        assert_ne!(
            a,
            fingerprint("POST", "/v1/facility-bookings", br#"{"a":1}"#)
        );
        assert_ne!(
            fingerprint("POST", "/x", br#"{"a":[1,2]}"#),
            fingerprint("POST", "/x", br#"{"a":[2,1]}"#)
        );
    }
}
