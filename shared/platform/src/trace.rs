//! Trace ids: one id follows a booking change from the HTTP request that made it, through the
//! outbox, every queue and worker, to the result events and the mails, so one search of the
//! JSON logs (`trace_id`) shows a booking's whole path across services.
//!
//! On the wire it is the W3C Trace Context `traceparent` header (HTTP and AMQP alike), so an
//! OpenTelemetry collector added later reads the same ids; we need only the id, not the SDK.
//! Within a process the id of the work in hand is a task-local ([`in_trace`], [`current`]):
//! whatever is published while handling a request or a message carries it on.

use std::fmt;
use std::future::Future;

use uuid::Uuid;

/// The header name, on HTTP requests/responses and on AMQP messages.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceId;
}

/// A 128-bit trace id, never zero; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl TraceId {
    /// A fresh random id, for work that arrives without one.
    pub fn new() -> Self {
        // A v4 UUID is 122 random bits and never zero.
        Self(Uuid::new_v4().as_u128())
    }

    /// An id as it is displayed (32 lowercase hex digits, not all zero), e.g. read back from
    /// storage.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let id = u128::from_str_radix(text, 16).ok()?;
        (id != 0).then_some(Self(id))
    }

    /// The id of a `traceparent` value (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`),
    /// or `None` when it is not a valid one (then the caller starts a new trace).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        // Version ff is forbidden; version 00 has exactly four fields.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(parent, 16) || !hex(flags, 2) || u64::from_str_radix(parent, 16).ok()? == 0 {
            return None;
        }
        Self::from_hex(trace)
    }

    /// A `traceparent` value for this trace, with a fresh parent (span) id, sampled.
    pub fn to_traceparent(self) -> String {
        let span = (Uuid::new_v4().as_u128() as u64).max(1);
        format!("00-{self}-{span:016x}-01")
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// Runs `work` with `trace` as the current trace.
pub async fn in_trace<F: Future>(trace: TraceId, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// The trace of the work in hand, if it runs [`in_trace`].
pub fn current() -> Option<TraceId> {
    CURRENT.try_with(|trace| *trace).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_gets_a_new_parent_each_time() {
        let trace = TraceId::new();
        let header = trace.to_traceparent();
        assert_eq!(header.len(), 55);
        assert_eq!(TraceId::from_traceparent(&header), Some(trace));
        assert_eq!(TraceId::from_hex(&trace.to_string()), Some(trace));
        assert_ne!(trace.to_traceparent(), header);
    }

    #[test]
    fn the_w3c_example_parses_and_broken_values_do_not() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceId::from_traceparent(example).map(|t| t.to_string()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned())
        );
        for broken in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceId::from_traceparent(broken), None, "{broken}");
        }
        // A later version may add fields; its id is still read.
        assert!(
            TraceId::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"
            )
            .is_some()
        );
    }

    #[tokio::test]
    async fn the_current_trace_is_the_one_the_work_runs_in() {
        assert_eq!(current(), None);
        let trace = TraceId::new();
        let seen = in_trace(trace, async {
            tokio::task::yield_now().await;
            current()
        })
        .await;
        assert_eq!(seen, Some(trace));
    }
}
